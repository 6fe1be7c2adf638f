//! Sign-up control (issue 18 item 2): who may create an account on this relay, and the
//! invites the admin makes. The operator's actions — set the mode, make, list and revoke
//! invites — live here once; the status page (`appliance`) calls them, and the creation
//! rules of `auth` (first login) and `http` (`/new`) ask the same [`SignUp`].
//!
//! The modes ([`Mode`], chatmail.ini key `signup`, changed live by the status page):
//!
//! - `open`: anyone (upstream's behaviour);
//! - `closed`: no new accounts; existing ones keep working (as the `nocreate` files, CFG-6);
//! - `invite`: only with a valid invite. The token travels in the QR code's URL
//!   (`DCACCOUNT:https://<domain>/new?invite=TOKEN`: Delta Chat POSTs to that URL as it
//!   is, query included) and `/new` hands out a password that carries it; for self-signed
//!   relays, which get `dclogin:` codes with the credentials in them, the password of the
//!   code carries it ([`invite_password`]). Either way the account's first login finds
//!   the token in its password and uses one use of the invite in the commit that creates
//!   the account (`store::invites`). The password is the one thing a client sends
//!   unchanged from the code to the login, and a password is secret, so the token is not
//!   shown to anyone the code was not shown to;
//! - `no-automatic`: refuse what Delta Chat's automatic relay selection makes. Delta Chat
//!   core (chatmail/core #8701, `autorelay::login_param_from_host`) gives an account it
//!   makes on its own on a relay from its built-in list a password of exactly 23 ASCII
//!   letters and digits, and 22 to one the user asked for with `DCACCOUNT:<domain>`
//!   (core 2.65 and older: 50). Nothing else in the login tells them apart. The relay's
//!   own credentials (`/new`, its page's `dclogin:` codes) never look like that
//!   ([`looks_automatic`]). Limits: a person who types a 23-character password of only
//!   letters and digits into a client by hand is refused too; a core from before #8701
//!   (or after the upstream hack is removed) is not recognised; and anyone can pick
//!   another length — this keeps the automatic sign-ups out, it does not stop a person.
//!
//! Invites: a random token of 26 base32 characters (130 bits), stored under its SHA-256
//! (looked up by hash, never compared as text); each has an expiry and a number of uses,
//! can be revoked, and is listed with its uses so far.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use rand::Rng;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
pub use crate::config::SignupMode as Mode;
use crate::store::{InviteCreated, InviteRow, Store, StoreError};

/// Length of an invite token.
pub const TOKEN_LEN: usize = 26;
/// RFC 4648 §6 base32 alphabet, lower case (5 bits per character: 130 bits).
const TOKEN_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
/// An invite-carrying password is this, the token, [`INVITE_SEPARATOR`], and a secret.
pub const INVITE_PASSWORD_PREFIX: &str = "inv.";
const INVITE_SEPARATOR: char = '.';
/// Length of the passwords Delta Chat core gives accounts on relays it picks by itself
/// (chatmail/core #8701).
pub const AUTOMATIC_PASSWORD_LEN: usize = 23;
/// Most uses of one invite, and longest validity, the pages accept.
pub const MAX_USES: u32 = 10_000;
pub const MAX_VALID_DAYS: u64 = 3650;
/// Longest admin note on an invite (characters).
pub const MAX_LABEL: usize = 100;

/// A fresh invite token.
pub fn new_token() -> String {
    let mut rng = rand::rng();
    (0..TOKEN_LEN)
        .map(|_| char::from(TOKEN_ALPHABET[rng.random_range(0..TOKEN_ALPHABET.len())]))
        .collect()
}

/// Whether `s` has the form of a token (not whether one exists).
pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_LEN && s.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

/// The store key of a token.
pub fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The public id of an invite (the status page's forms name it): the first 8 bytes of
/// its key in hex. It says nothing about the token.
pub fn invite_id(key: &[u8; 32]) -> String {
    key[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A password that carries `token`: [`INVITE_PASSWORD_PREFIX`], the token, a dot and
/// `secret` (which keeps the accounts of one invite from sharing a password).
pub fn invite_password(token: &str, secret: &str) -> String {
    format!("{INVITE_PASSWORD_PREFIX}{token}{INVITE_SEPARATOR}{secret}")
}

/// The token an invite-carrying password carries, if it is one (a non-empty secret
/// after the token).
pub fn password_token(password: &str) -> Option<&str> {
    let rest = password.strip_prefix(INVITE_PASSWORD_PREFIX)?;
    let token = rest.get(..TOKEN_LEN)?;
    let secret = rest[TOKEN_LEN..].strip_prefix(INVITE_SEPARATOR)?;
    (is_token(token) && !secret.is_empty()).then_some(token)
}

/// Whether a password looks made by Delta Chat's automatic relay selection (module doc):
/// exactly 23 ASCII letters and digits.
pub fn looks_automatic(password: &str) -> bool {
    password.len() == AUTOMATIC_PASSWORD_LEN && password.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why an invite is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteProblem {
    /// Invite mode, and the request carries no token.
    Missing,
    /// No invite has this token (mistyped, forged, or from another relay).
    Unknown,
    Expired,
    UsedUp,
    Revoked,
}

impl InviteProblem {
    /// What a client shows its user.
    pub fn user_text(self) -> &'static str {
        match self {
            InviteProblem::Missing => {
                "This relay creates new accounts only with an invite: ask its owner for an invite QR code"
            }
            InviteProblem::Unknown => {
                "This invite is not valid on this relay: ask its owner for a new invite QR code"
            }
            InviteProblem::Expired => {
                "This invite has expired: ask the relay's owner for a new invite QR code"
            }
            InviteProblem::UsedUp => {
                "This invite has been used as often as it may: ask the relay's owner for a new invite QR code"
            }
            InviteProblem::Revoked => {
                "This invite was withdrawn by the relay's owner: ask them for a new invite QR code"
            }
        }
    }

    /// For the owner's log.
    pub fn as_str(self) -> &'static str {
        match self {
            InviteProblem::Missing => "no invite given",
            InviteProblem::Unknown => "unknown invite token",
            InviteProblem::Expired => "invite expired",
            InviteProblem::UsedUp => "invite used up",
            InviteProblem::Revoked => "invite revoked",
        }
    }
}

/// Why the sign-up mode refuses a creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `signup = closed`.
    Closed,
    /// `signup = invite` and the invite is missing or not usable.
    Invite(InviteProblem),
    /// `signup = no-automatic` and the password looks automatic.
    Automatic,
}

impl Refusal {
    /// What a client shows its user.
    pub fn user_text(self) -> String {
        match self {
            Refusal::Closed => {
                "This relay does not create new accounts: its owner has turned sign-up off".into()
            }
            Refusal::Invite(p) => p.user_text().into(),
            Refusal::Automatic => "This relay does not take accounts from automatic relay \
                                   selection: scan the QR code on its own page to sign up"
                .into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Closed => write!(f, "account creation disabled (signup = closed)"),
            Refusal::Invite(p) => write!(f, "{} (signup = invite)", p.as_str()),
            Refusal::Automatic => write!(
                f,
                "password of {AUTOMATIC_PASSWORD_LEN} letters and digits, as Delta Chat's \
                 automatic relay selection makes (signup = no-automatic)"
            ),
        }
    }
}

/// What the mode lets a first login do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Create the account.
    Create,
    /// Create it only by using one use of the invite with this key.
    WithInvite([u8; 32]),
}

/// The mode's rule for a creation at first login with `password` (pure).
pub fn admission(mode: Mode, password: &str) -> Result<Admission, Refusal> {
    match mode {
        Mode::Open => Ok(Admission::Create),
        Mode::Closed => Err(Refusal::Closed),
        Mode::Invite => match password_token(password) {
            Some(token) => Ok(Admission::WithInvite(token_key(token))),
            None => Err(Refusal::Invite(InviteProblem::Missing)),
        },
        Mode::NoAutomatic if looks_automatic(password) => Err(Refusal::Automatic),
        Mode::NoAutomatic => Ok(Admission::Create),
    }
}

/// Whether the invite `row` (`None`: no such invite) may be used at `now` (pure).
pub fn invite_problem(row: Option<&InviteRow>, now: u64) -> Option<InviteProblem> {
    let Some(row) = row else {
        return Some(InviteProblem::Unknown);
    };
    if row.revoked {
        Some(InviteProblem::Revoked)
    } else if now >= row.expires {
        Some(InviteProblem::Expired)
    } else if row.uses >= row.max_uses {
        Some(InviteProblem::UsedUp)
    } else {
        None
    }
}

/// The state of an invite as the status page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteState {
    Usable,
    Expired,
    UsedUp,
    Revoked,
}

/// One invite as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// [`invite_id`].
    pub id: String,
    pub token: String,
    pub label: String,
    pub created: u64,
    pub expires: u64,
    pub max_uses: u32,
    pub uses: u32,
    pub state: InviteState,
}

impl Invite {
    fn from_row(row: InviteRow, now: u64) -> Invite {
        let state = match invite_problem(Some(&row), now) {
            None => InviteState::Usable,
            Some(InviteProblem::Revoked) => InviteState::Revoked,
            Some(InviteProblem::Expired) => InviteState::Expired,
            Some(_) => InviteState::UsedUp,
        };
        Invite {
            id: invite_id(&row.key),
            token: row.token,
            label: row.label,
            created: row.created,
            expires: row.expires,
            max_uses: row.max_uses,
            uses: row.uses,
            state,
        }
    }
}

/// What an operator action could not do; the text is for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SignUpError {
    #[error("{0}")]
    Input(String),
    #[error("no invite with id {0}")]
    NoInvite(String),
    #[error("the relay's store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}: {msg}")]
    Config { path: String, msg: String },
}

/// The outcome of a creation at first login under the sign-up rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Creation {
    /// Created now.
    New,
    /// Existed already (a concurrent login won): verify against this hash.
    Existing(String),
    Refused(Refusal),
}

/// The relay's live sign-up setting and its invites. One per relay, shared by the
/// logins, `/new` and the status page; a mode change applies to the next request.
pub struct SignUp {
    mode: AtomicU8,
    store: Store,
    clock: Arc<dyn Clock>,
}

fn mode_index(mode: Mode) -> u8 {
    Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0) as u8
}

impl SignUp {
    pub fn new(store: Store, mode: Mode, clock: Arc<dyn Clock>) -> SignUp {
        SignUp {
            mode: AtomicU8::new(mode_index(mode)),
            store,
            clock,
        }
    }

    /// The mode now.
    pub fn mode(&self) -> Mode {
        Mode::ALL
            .get(self.mode.load(Ordering::Acquire) as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Operator action: change the mode. With `config_file` the change is first written
    /// to that chatmail.ini (key `signup`, every other line kept; replaced atomically
    /// and durably), so it survives a restart; when that fails nothing changes. Then the
    /// running relay uses it from its next request on.
    pub fn set_mode(&self, mode: Mode, config_file: Option<&Path>) -> Result<(), SignUpError> {
        if let Some(path) = config_file {
            crate::config::write_params(path, &[("signup", Some(mode.as_str()))]).map_err(
                |msg| SignUpError::Config {
                    path: path.display().to_string(),
                    msg,
                },
            )?;
        }
        self.mode.store(mode_index(mode), Ordering::Release);
        tracing::info!("sign-up mode set to {}", mode.as_str());
        Ok(())
    }

    /// Operator action: make an invite valid for `valid_days` days and `uses` accounts.
    pub async fn create_invite(
        &self,
        valid_days: u64,
        uses: u32,
        label: &str,
    ) -> Result<Invite, SignUpError> {
        if !(1..=MAX_VALID_DAYS).contains(&valid_days) {
            return Err(SignUpError::Input(format!(
                "an invite is valid for 1 to {MAX_VALID_DAYS} days, not {valid_days}"
            )));
        }
        if !(1..=MAX_USES).contains(&uses) {
            return Err(SignUpError::Input(format!(
                "an invite may create 1 to {MAX_USES} accounts, not {uses}"
            )));
        }
        let label = label.trim();
        if label.chars().count() > MAX_LABEL || label.chars().any(char::is_control) {
            return Err(SignUpError::Input(format!(
                "the note is at most {MAX_LABEL} characters on one line"
            )));
        }
        let now = self.clock.unix_now();
        let token = new_token();
        let row = InviteRow {
            key: token_key(&token),
            token,
            label: label.to_string(),
            created: now,
            expires: now.saturating_add(valid_days * 86_400),
            max_uses: uses,
            uses: 0,
            revoked: false,
        };
        self.store.add_invite(row.clone()).await?;
        tracing::info!(
            "invite {} made: {uses} uses, {valid_days} days",
            invite_id(&row.key)
        );
        Ok(Invite::from_row(row, now))
    }

    /// Operator action: every invite, oldest first.
    pub fn invites(&self) -> Result<Vec<Invite>, SignUpError> {
        let now = self.clock.unix_now();
        Ok(self
            .store
            .invites()?
            .into_iter()
            .map(|r| Invite::from_row(r, now))
            .collect())
    }

    /// Operator action: revoke the invite with this id ([`invite_id`]).
    pub async fn revoke_invite(&self, id: &str) -> Result<(), SignUpError> {
        let key = self
            .store
            .invites()?
            .into_iter()
            .map(|r| r.key)
            .find(|k| invite_id(k) == id)
            .ok_or_else(|| SignUpError::NoInvite(id.to_string()))?;
        self.store.revoke_invite(key).await?;
        tracing::info!("invite {id} revoked");
        Ok(())
    }

    /// Why the mode refuses `/new` with this invite token now (`None`: it may hand out
    /// credentials). Only looks: the use is taken at the first login.
    pub fn new_account_refusal(&self, token: Option<&str>) -> Result<Option<Refusal>, StoreError> {
        match self.mode() {
            Mode::Closed => Ok(Some(Refusal::Closed)),
            Mode::Invite => {
                let Some(token) = token.filter(|t| !t.is_empty()) else {
                    return Ok(Some(Refusal::Invite(InviteProblem::Missing)));
                };
                if !is_token(token) {
                    return Ok(Some(Refusal::Invite(InviteProblem::Unknown)));
                }
                let row = self.store.invite(&token_key(token))?;
                Ok(invite_problem(row.as_ref(), self.clock.unix_now()).map(Refusal::Invite))
            }
            Mode::Open | Mode::NoAutomatic => Ok(None),
        }
    }

    /// The mode's rule for a first login with `password` ([`admission`]); an invite is
    /// looked at (not used) so a refused one costs no password hash.
    pub fn admission(&self, password: &str) -> Result<Result<Admission, Refusal>, StoreError> {
        let admission = admission(self.mode(), password);
        if let Ok(Admission::WithInvite(key)) = admission {
            let row = self.store.invite(&key)?;
            if let Some(p) = invite_problem(row.as_ref(), self.clock.unix_now()) {
                return Ok(Err(Refusal::Invite(p)));
            }
        }
        Ok(admission)
    }

    /// Create the account at first login as `admission` allows: with an invite, one of
    /// its uses is taken in the same commit, if it is still usable then.
    pub async fn create(
        &self,
        admission: Admission,
        address: &str,
        password_hash: &str,
    ) -> Result<Creation, StoreError> {
        let now = self.clock.unix_now();
        match admission {
            Admission::Create => Ok(
                match self
                    .store
                    .create_account(address, password_hash, now)
                    .await?
                {
                    crate::store::Created::New => Creation::New,
                    crate::store::Created::Existing(a) => Creation::Existing(a.password_hash),
                },
            ),
            Admission::WithInvite(key) => Ok(
                match self
                    .store
                    .create_account_with_invite(address, password_hash, now, key, move |row| {
                        match invite_problem(row, now) {
                            Some(p) => Err(Refusal::Invite(p)),
                            None => Ok(()),
                        }
                    })
                    .await?
                {
                    InviteCreated::New => Creation::New,
                    InviteCreated::Existing(a) => Creation::Existing(a.password_hash),
                    InviteCreated::Refused(r) => Creation::Refused(r),
                },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ManualClock;

    const DAY: u64 = 86_400;

    fn signup(dir: &Path, mode: Mode) -> (SignUp, Arc<ManualClock>) {
        let clock = ManualClock::at(1_800_000_000);
        let store = Store::open(&dir.join("s.redb")).unwrap();
        (SignUp::new(store, mode, clock.clone()), clock)
    }

    #[test]
    fn tokens_are_random_base32_of_130_bits() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(is_token(&a) && is_token(&b), "{a} {b}");
        const { assert!(TOKEN_LEN * 5 >= 128) };
        assert!(!is_token("short"));
        assert!(!is_token(&a.to_uppercase()));
        assert_eq!(invite_id(&token_key(&a)).len(), 16);
    }

    #[test]
    fn invite_passwords_carry_their_token() {
        let t = new_token();
        let pw = invite_password(&t, "Secret!9x");
        assert_eq!(password_token(&pw), Some(t.as_str()));
        for not in [
            "inv.".to_string(),
            format!("inv.{t}"),
            format!("inv.{t}."),
            format!("inv.{t}xsecret"),
            format!("inv.{}.secret", &t[1..]),
            format!("inv.{}.secret", t.to_uppercase()),
            format!("INV.{t}.secret"),
            "password-1".to_string(),
        ] {
            assert_eq!(password_token(&not), None, "{not}");
        }
    }

    /// The heuristic of `no-automatic`: 23 letters and digits, nothing else.
    #[test]
    fn automatic_passwords_are_23_letters_and_digits() {
        assert!(looks_automatic("abcdefghijKLMNOPQRST123"));
        assert!(
            !looks_automatic("abcdefghijKLMNOPQRST12"),
            "22: DCACCOUNT:<domain>"
        );
        assert!(!looks_automatic("abcdefghijKLMNOPQRST1234"));
        assert!(!looks_automatic("abcdefghijKLMNOPQRST12!"), "punctuation");
        let fifty = "a".repeat(50);
        assert!(!looks_automatic(&fifty), "core 2.65's DCACCOUNT:<domain>");
    }

    #[test]
    fn admission_per_mode() {
        let t = new_token();
        let invite = invite_password(&t, "s3cret");
        let auto = "abcdefghijKLMNOPQRST123";
        let table = [
            (Mode::Open, "password-1", Ok(Admission::Create)),
            (Mode::Open, auto, Ok(Admission::Create)),
            (Mode::Closed, "password-1", Err(Refusal::Closed)),
            (Mode::Closed, invite.as_str(), Err(Refusal::Closed)),
            (
                Mode::Invite,
                "password-1",
                Err(Refusal::Invite(InviteProblem::Missing)),
            ),
            (
                Mode::Invite,
                invite.as_str(),
                Ok(Admission::WithInvite(token_key(&t))),
            ),
            (Mode::NoAutomatic, auto, Err(Refusal::Automatic)),
            (Mode::NoAutomatic, "password-1", Ok(Admission::Create)),
            (Mode::NoAutomatic, invite.as_str(), Ok(Admission::Create)),
        ];
        for (mode, pw, want) in table {
            assert_eq!(admission(mode, pw), want, "{mode:?} {pw}");
        }
    }

    #[test]
    fn invite_problems_in_order() {
        let row = InviteRow {
            key: [0; 32],
            token: String::new(),
            label: String::new(),
            created: 0,
            expires: 100,
            max_uses: 2,
            uses: 1,
            revoked: false,
        };
        assert_eq!(invite_problem(Some(&row), 99), None);
        assert_eq!(
            invite_problem(Some(&row), 100),
            Some(InviteProblem::Expired)
        );
        let used = InviteRow {
            uses: 2,
            ..row.clone()
        };
        assert_eq!(invite_problem(Some(&used), 0), Some(InviteProblem::UsedUp));
        let revoked = InviteRow {
            revoked: true,
            ..used
        };
        assert_eq!(
            invite_problem(Some(&revoked), 200),
            Some(InviteProblem::Revoked)
        );
        assert_eq!(invite_problem(None, 0), Some(InviteProblem::Unknown));
    }

    /// Create → use → used up → refused; expiry by the clock; revoke; forged tokens.
    #[tokio::test]
    async fn invites_live_through_uses_expiry_and_revocation() {
        let dir = tempfile::tempdir().unwrap();
        let (s, clock) = signup(dir.path(), Mode::Invite);
        let inv = s.create_invite(2, 2, "for the family").await.unwrap();
        assert_eq!(inv.state, InviteState::Usable);
        assert_eq!(inv.expires - inv.created, 2 * DAY);
        assert_eq!(s.new_account_refusal(Some(&inv.token)).unwrap(), None);
        for (i, want) in [Creation::New, Creation::New].into_iter().enumerate() {
            let pw = invite_password(&inv.token, &format!("secret{i}"));
            let adm = s.admission(&pw).unwrap().unwrap();
            let got = s
                .create(adm, &format!("member{i:03}@x"), "h")
                .await
                .unwrap();
            assert_eq!(got, want);
        }
        let listed = s.invites().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].uses, listed[0].state), (2, InviteState::UsedUp));
        let used_up = Refusal::Invite(InviteProblem::UsedUp);
        let pw = invite_password(&inv.token, "third");
        assert_eq!(s.admission(&pw).unwrap(), Err(used_up));
        assert_eq!(
            s.new_account_refusal(Some(&inv.token)).unwrap(),
            Some(used_up)
        );
        // Even past the look (admission taken before the last use went), the commit
        // refuses.
        let adm = Admission::WithInvite(token_key(&inv.token));
        assert_eq!(
            s.create(adm, "member999@x", "h").await.unwrap(),
            Creation::Refused(used_up)
        );
        assert_eq!(s.store.account_count().unwrap(), 2);

        // Expiry and revocation.
        clock.advance(1);
        let later = s.create_invite(1, 5, "").await.unwrap();
        clock.advance(1);
        let revoked = s.create_invite(1, 5, "").await.unwrap();
        s.revoke_invite(&revoked.id).await.unwrap();
        assert!(matches!(
            s.revoke_invite("0000000000000000").await,
            Err(SignUpError::NoInvite(_))
        ));
        assert_eq!(
            s.new_account_refusal(Some(&revoked.token)).unwrap(),
            Some(Refusal::Invite(InviteProblem::Revoked))
        );
        assert_eq!(s.new_account_refusal(Some(&later.token)).unwrap(), None);
        clock.advance(DAY - 1);
        assert_eq!(
            s.new_account_refusal(Some(&later.token)).unwrap(),
            Some(Refusal::Invite(InviteProblem::Expired))
        );
        let states: Vec<_> = s.invites().unwrap().iter().map(|i| i.state).collect();
        assert_eq!(
            states,
            [
                InviteState::UsedUp,
                InviteState::Expired,
                InviteState::Revoked
            ]
        );

        // Forged: a well-formed token nobody made, a malformed one, none.
        let forged = new_token();
        assert_eq!(
            s.new_account_refusal(Some(&forged)).unwrap(),
            Some(Refusal::Invite(InviteProblem::Unknown))
        );
        assert_eq!(
            s.admission(&invite_password(&forged, "x")).unwrap(),
            Err(Refusal::Invite(InviteProblem::Unknown))
        );
        assert_eq!(
            s.new_account_refusal(Some("'; drop table")).unwrap(),
            Some(Refusal::Invite(InviteProblem::Unknown))
        );
        assert_eq!(
            s.new_account_refusal(None).unwrap(),
            Some(Refusal::Invite(InviteProblem::Missing))
        );
    }

    #[tokio::test]
    async fn bad_invite_inputs_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = signup(dir.path(), Mode::Invite);
        for (days, uses, label) in [
            (0, 1, ""),
            (MAX_VALID_DAYS + 1, 1, ""),
            (1, 0, ""),
            (1, MAX_USES + 1, ""),
            (1, 1, "two\nlines"),
        ] {
            assert!(
                matches!(
                    s.create_invite(days, uses, label).await,
                    Err(SignUpError::Input(_))
                ),
                "{days} {uses} {label:?}"
            );
        }
        let long = "x".repeat(MAX_LABEL + 1);
        assert!(s.create_invite(1, 1, &long).await.is_err());
        assert!(s.invites().unwrap().is_empty());
    }

    /// The mode goes to chatmail.ini (the rest of the file kept) and into the running
    /// setting; a file that cannot be written changes neither.
    #[test]
    fn set_mode_persists_then_applies() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = signup(dir.path(), Mode::Open);
        let ini = dir.path().join("chatmail.ini");
        let text = "# mine\n[params]\nmail_domain = 127.0.0.1\nsignup = open\n";
        std::fs::write(&ini, text).unwrap();
        s.set_mode(Mode::Invite, Some(&ini)).unwrap();
        assert_eq!(s.mode(), Mode::Invite);
        let written = std::fs::read_to_string(&ini).unwrap();
        assert_eq!(
            written,
            "# mine\n[params]\nsignup = invite\nmail_domain = 127.0.0.1\n"
        );
        let c = crate::config::Config::parse(&written).unwrap().config;
        assert_eq!(c.signup, Mode::Invite);
        s.set_mode(Mode::NoAutomatic, None).unwrap();
        assert_eq!(s.mode(), Mode::NoAutomatic);
        let missing = dir.path().join("gone.ini");
        assert!(s.set_mode(Mode::Closed, Some(&missing)).is_err());
        assert_eq!(s.mode(), Mode::NoAutomatic, "unchanged after a failure");
    }
}
