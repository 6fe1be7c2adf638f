//! Sign-up invites (`INVITES`, issue 18): one row per invite the admin made, keyed by the
//! SHA-256 of its token (a lookup by hash: no comparison of secrets whose time could leak
//! them), and the creation of an account with an invite, which uses one of the invite's
//! uses in the same durable commit as the account — so an invite is never used without
//! its account, nor an account made without the use (two logins after the last use: one
//! wins). Whether an invite may be used is the caller's rule (`crate::signup`); the store
//! only keeps the rows.

use redb::{ReadableTable, WriteTransaction};

use super::accounts::{Account, Created, existing_account, insert_account};
use super::codec::{Dec, Enc};
use super::tables::INVITES;
use super::{Store, StoreError};

/// One stored invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    /// SHA-256 of the token: the table key.
    pub key: [u8; 32],
    /// The token itself, so the status page can show the invite's QR code again.
    pub token: String,
    /// The admin's note ("for the family"), may be empty.
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which it is no longer accepted.
    pub expires: u64,
    /// Accounts it may create.
    pub max_uses: u32,
    /// Accounts it created so far.
    pub uses: u32,
    pub revoked: bool,
}

/// Outcome of [`Store::create_account_with_invite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InviteCreated<E> {
    /// Created; the invite has one use more.
    New,
    /// The address exists (another login won): nothing changed, no use taken.
    Existing(Account),
    /// The caller's rule refused the invite (or its absence): nothing changed.
    Refused(E),
}

fn encode(r: &InviteRow) -> Vec<u8> {
    Enc::default()
        .str(&r.token)
        .str(&r.label)
        .u64(r.created)
        .u64(r.expires)
        .u32(r.max_uses)
        .u32(r.uses)
        .u8(r.revoked as u8)
        .0
}

fn decode(key: &[u8], b: &[u8]) -> Result<InviteRow, StoreError> {
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| StoreError::Db("invite key is not 32 bytes".into()))?;
    let mut d = Dec(b);
    Ok(InviteRow {
        key,
        token: d.str()?,
        label: d.str()?,
        created: d.u64()?,
        expires: d.u64()?,
        max_uses: d.u32()?,
        uses: d.u32()?,
        revoked: d.u8()? != 0,
    })
}

fn get(tx: &WriteTransaction, key: &[u8; 32]) -> Result<Option<InviteRow>, StoreError> {
    let t = tx.open_table(INVITES)?;
    let row = t.get(key.as_slice())?;
    row.map(|v| decode(key, v.value())).transpose()
}

fn put(tx: &WriteTransaction, row: &InviteRow) -> Result<(), StoreError> {
    tx.open_table(INVITES)?
        .insert(row.key.as_slice(), encode(row).as_slice())?;
    Ok(())
}

impl Store {
    /// Store a new invite, durably. An existing row with the same key is an error (a
    /// token is random: this does not happen unless the caller reuses one).
    pub async fn add_invite(&self, row: InviteRow) -> Result<(), StoreError> {
        self.writer
            .run(true, move |tx| {
                if get(tx, &row.key)?.is_some() {
                    return Err(StoreError::Db("an invite with this token exists".into()));
                }
                put(tx, &row)
            })
            .await
    }

    /// The invite with this key, if there is one.
    pub fn invite(&self, key: &[u8; 32]) -> Result<Option<InviteRow>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(INVITES)?;
        let row = t.get(key.as_slice())?;
        row.map(|v| decode(key, v.value())).transpose()
    }

    /// Every invite, oldest first.
    pub fn invites(&self) -> Result<Vec<InviteRow>, StoreError> {
        let rx = self.read()?;
        let t = rx.open_table(INVITES)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(decode(k.value(), v.value())?);
        }
        out.sort_by_key(|r| (r.created, r.key));
        Ok(out)
    }

    /// Mark an invite revoked, durably; `false` when there is none with this key.
    pub async fn revoke_invite(&self, key: [u8; 32]) -> Result<bool, StoreError> {
        self.writer
            .run(true, move |tx| match get(tx, &key)? {
                Some(mut row) => {
                    row.revoked = true;
                    put(tx, &row)?;
                    Ok(true)
                }
                None => Ok(false),
            })
            .await
    }

    /// Create the account (as [`Store::create_account`]) if `check` accepts the invite
    /// with key `key` as it is inside the commit (`None`: no such invite), and count
    /// one use of it in the same durable commit.
    pub async fn create_account_with_invite<E, F>(
        &self,
        address: &str,
        password_hash: &str,
        now: u64,
        key: [u8; 32],
        check: F,
    ) -> Result<InviteCreated<E>, StoreError>
    where
        E: Send + 'static,
        F: FnOnce(Option<&InviteRow>) -> Result<(), E> + Send + 'static,
    {
        let account = Account::new(address, password_hash, now);
        self.writer
            .run(true, move |tx| {
                // An account made meanwhile (a concurrent first login, perhaps with the
                // invite's last use) is a login to it, whatever the invite says now.
                if let Some(a) = existing_account(tx, &account.address)? {
                    return Ok(InviteCreated::Existing(a));
                }
                let row = get(tx, &key)?;
                if let Err(e) = check(row.as_ref()) {
                    return Ok(InviteCreated::Refused(e));
                }
                let Some(mut row) = row else {
                    return Err(StoreError::Db("invite accepted without a row".into()));
                };
                match insert_account(tx, &account)? {
                    Created::Existing(a) => Ok(InviteCreated::Existing(a)),
                    Created::New => {
                        row.uses = row.uses.saturating_add(1);
                        put(tx, &row)?;
                        Ok(InviteCreated::New)
                    }
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8, uses: u32) -> InviteRow {
        InviteRow {
            key: [n; 32],
            token: format!("token{n}"),
            label: "for the family".into(),
            created: 1_000 + n as u64,
            expires: 2_000,
            max_uses: uses,
            uses: 0,
            revoked: false,
        }
    }

    /// Rows survive a reopen (durable), list oldest first, and revoke marks one.
    #[tokio::test]
    async fn invites_are_stored_listed_and_revoked_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.add_invite(row(2, 3)).await.unwrap();
            store.add_invite(row(1, 1)).await.unwrap();
            assert!(store.add_invite(row(1, 1)).await.is_err(), "same key twice");
            assert!(store.revoke_invite([2; 32]).await.unwrap());
            assert!(!store.revoke_invite([9; 32]).await.unwrap());
        }
        let store = crate::store::tests::reopen(&path).await;
        let list = store.invites().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0], row(1, 1));
        assert_eq!(
            list[1],
            InviteRow {
                revoked: true,
                ..row(2, 3)
            }
        );
        assert_eq!(store.invite(&[1; 32]).unwrap(), Some(row(1, 1)));
        assert_eq!(store.invite(&[7; 32]).unwrap(), None);
    }

    /// The use is counted with the account in one commit; a refused check and an
    /// existing address change nothing.
    #[tokio::test]
    async fn creation_with_an_invite_counts_one_use_with_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.add_invite(row(1, 2)).await.unwrap();
        let usable = |r: Option<&InviteRow>| match r {
            Some(r) if r.uses < r.max_uses => Ok(()),
            Some(_) => Err("used up"),
            None => Err("unknown"),
        };
        let made = store
            .create_account_with_invite("aaaaaaaaa@x", "h", 86_400, [1; 32], usable)
            .await
            .unwrap();
        assert_eq!(made, InviteCreated::New);
        assert_eq!(store.invite(&[1; 32]).unwrap().unwrap().uses, 1);
        assert!(store.account("aaaaaaaaa@x").unwrap().is_some());
        // The same address again: exists, no use taken.
        let again = store
            .create_account_with_invite("aaaaaaaaa@x", "h2", 86_400, [1; 32], usable)
            .await
            .unwrap();
        assert!(matches!(again, InviteCreated::Existing(a) if a.password_hash == "h"));
        assert_eq!(store.invite(&[1; 32]).unwrap().unwrap().uses, 1);
        // Used up now (a concurrent login took the last use for this very address):
        // still a login to the account, not a refusal.
        let full = |r: Option<&InviteRow>| match r {
            Some(_) => Err("used up"),
            None => Err("unknown"),
        };
        let again = store
            .create_account_with_invite("aaaaaaaaa@x", "h3", 86_400, [1; 32], full)
            .await
            .unwrap();
        assert!(matches!(again, InviteCreated::Existing(a) if a.password_hash == "h"));
        // Unknown key: refused, no account.
        let forged = store
            .create_account_with_invite("bbbbbbbbb@x", "h", 86_400, [5; 32], usable)
            .await
            .unwrap();
        assert_eq!(forged, InviteCreated::Refused("unknown"));
        assert!(store.account("bbbbbbbbb@x").unwrap().is_none());
    }

    /// Ten logins race for the last use of an invite: exactly one account is made.
    #[tokio::test]
    async fn concurrent_creations_share_the_last_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store
            .add_invite(InviteRow {
                uses: 4,
                ..row(1, 5)
            })
            .await
            .unwrap();
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_account_with_invite(
                            &format!("racer{i:04}@x"),
                            "h",
                            0,
                            [1; 32],
                            |r: Option<&InviteRow>| match r {
                                Some(r) if r.uses < r.max_uses => Ok(()),
                                _ => Err(()),
                            },
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            if t.await.unwrap() == InviteCreated::New {
                won += 1;
            }
        }
        assert_eq!(won, 1);
        assert_eq!(store.invite(&[1; 32]).unwrap().unwrap().uses, 5);
        assert_eq!(store.account_count().unwrap(), 1);
    }
}
