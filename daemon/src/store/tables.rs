//! The store's tables: their names and key and value types are the on-disk format, so they
//! are defined here together with the schema version that describes them. The rows are
//! encoded by the module of each table family: `accounts`, `mailboxes` (mailboxes and
//! messages), `bodies`, `queue`, `push` (push jobs), `metadata` (device tokens), `blocked`
//! (blocked addresses), `invites`; `meta` by the store itself (`mod.rs`) and the writer.

use redb::{TableDefinition, WriteTransaction};

use super::StoreError;

/// Version of the table layout below; recorded in `meta` at creation. 2: every body
/// carries its MIME structure (`message::Node::encode`) in front of the bytes.
pub const SCHEMA_VERSION: u64 = 2;

/// Store-wide values: `schema_version`, `next_id`, `log_seq` (the last logged change the
/// store file holds) and `secret:<name>`.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// address → account row.
pub(super) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// (address, mailbox name) → mailbox row.
pub(super) const MAILBOXES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("mailboxes");
/// (mailbox id, uid) → message row (flags, size, date, body id).
pub(super) const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// body id → varint length of the structure, the structure, the message bytes; shared by
/// every copy of one delivery (see [`super::bodies`]).
pub(super) const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
/// body id → number of message and queue rows that point at it.
pub(super) const BODY_REFS: TableDefinition<u64, u32> = TableDefinition::new("body_refs");
/// queue id → outbound queue row.
pub(super) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// (next attempt, queue id) → (): the outbound queue by due time, so the scheduler reads
/// only the rows it can start now and the time of the next one. Derived from `QUEUE`:
/// checked against it at open and rebuilt when it differs ([`super::queue::index_queue`]).
pub(super) const QUEUE_DUE: TableDefinition<(u64, u64), ()> = TableDefinition::new("queue_due");
/// (address, token) → (first registration, last SET), Unix seconds.
pub(super) const TOKENS: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("device_tokens");
/// job id → push job row (PUSH-2): account, token, attempts, first and next attempt.
pub(super) const PUSH_JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("push_jobs");
/// (failed attempts, next attempt, job id) → (): the push jobs by retry level and due
/// time, so the notifier reads only the jobs it can start now.
pub(super) const PUSH_DUE: TableDefinition<(u32, u64, u64), ()> = TableDefinition::new("push_due");
/// address → blocked-address row (the time of the block): addresses no login may create
/// again. Added without a schema change: an older program ignores the table.
pub(super) const BLOCKED: TableDefinition<&str, &[u8]> = TableDefinition::new("blocked_addresses");

/// SHA-256 of an invite token → invite row (issue 18: sign-up by invite; `invites.rs`).
/// Added without a schema version change: an older binary ignores the table.
pub(super) const INVITES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("invites");

/// What a table holds, for snapshots (`snapshot.rs`): a backup without messages leaves
/// out the [`Holds::Messages`] tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Holds {
    /// Accounts, mailboxes, device tokens, secrets: the relay itself.
    Relay,
    /// Stored and queued messages and what points at them.
    Messages,
}

/// Something done once per table, generic over its key and value types.
pub(super) trait TableVisitor {
    fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
        &mut self,
        def: TableDefinition<'static, K, V>,
        holds: Holds,
    ) -> Result<(), StoreError>;
}

/// Every table of the store, once: the one list that creation and snapshots walk, so a
/// new table cannot be left out of either.
pub(super) fn visit_all(v: &mut impl TableVisitor) -> Result<(), StoreError> {
    v.table(META, Holds::Relay)?;
    v.table(ACCOUNTS, Holds::Relay)?;
    v.table(MAILBOXES, Holds::Relay)?;
    v.table(TOKENS, Holds::Relay)?;
    v.table(BLOCKED, Holds::Relay)?;
    v.table(INVITES, Holds::Relay)?;
    v.table(MESSAGES, Holds::Messages)?;
    v.table(BODIES, Holds::Messages)?;
    v.table(BODY_REFS, Holds::Messages)?;
    v.table(QUEUE, Holds::Messages)?;
    v.table(QUEUE_DUE, Holds::Messages)?;
    v.table(PUSH_JOBS, Holds::Messages)?;
    v.table(PUSH_DUE, Holds::Messages)?;
    Ok(())
}

/// Create every table (in an open write transaction) so readers never meet a missing one.
pub(super) fn create_all(tx: &WriteTransaction) -> Result<(), StoreError> {
    struct Create<'a>(&'a WriteTransaction);
    impl TableVisitor for Create<'_> {
        fn table<K: redb::Key + 'static, V: redb::Value + 'static>(
            &mut self,
            def: TableDefinition<'static, K, V>,
            _: Holds,
        ) -> Result<(), StoreError> {
            self.0.open_table(def)?;
            Ok(())
        }
    }
    visit_all(&mut Create(tx))
}
