//! Users: rows, batch lookups for the loaders, and the users list.

use chrono::{DateTime, Utc};

use super::{Columns, Db, Page, Store, id_list_sql, with_pool, with_tx};
use crate::domain::{DisplayName, Email};
use crate::error::AppError;

/// What a user may do. Stored as text (`USER` / `ADMIN`); the GraphQL enum mirrors it (`remote`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum Role {
    User,
    Admin,
}

/// The billing plan. Stored as text (`FREE` / `PRO`); the GraphQL enum mirrors it (`remote`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "UPPERCASE")]
pub enum Plan {
    Free,
    Pro,
}

impl Role {
    /// The stored (and GraphQL) spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Plan {
    /// The stored (and GraphQL) spelling.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The stored enums, decoded from their text column (`#[sqlx(try_from = "String")]`).
macro_rules! stored_text {
    ($($ty:ty),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = strum::ParseError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    )*};
}
stored_text!(Role, Plan);

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "String")]
    pub plan: Plan,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! user_cols {
    () => {
        "id, email, name, role, plan, created_at, updated_at"
    };
}

/// Reads user `id`'s columns, in `joined_user_cols!()` order, from a row that holds them next.
pub(crate) fn read_author<'r, R: sqlx::Row>(
    cols: &mut Columns<'r, R>,
    id: i64,
) -> Result<UserRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(UserRow {
        id,
        email: cols.next("a_email")?,
        name: cols.next("a_name")?,
        role: cols.next_parsed("a_role")?,
        plan: cols.next_parsed("a_plan")?,
        created_at: cols.next("a_created_at")?,
        updated_at: cols.next("a_updated_at")?,
    })
}

/// A user's columns for a join (the author of each post or comment), from `users u`, renamed `a_*` so they
/// cannot clash with the row's own columns. The id is the row's own `author_id`. Read with `read_author`.
macro_rules! joined_user_cols {
    () => {
        concat!(
            "u.email AS a_email, u.name AS a_name, u.role AS a_role, u.plan AS a_plan, ",
            "u.created_at AS a_created_at, u.updated_at AS a_updated_at"
        )
    };
}
pub(crate) use joined_user_cols;

impl Store {
    /// Users by id, in no particular order; missing ids are simply absent. One statement.
    pub async fn users_by_ids(&self, ids: &[i64]) -> Result<Vec<UserRow>, AppError> {
        const SQL: super::IdListSql =
            id_list_sql!(concat!("SELECT ", user_cols!(), " FROM users WHERE id"), "");
        self.fetch_for_ids(&SQL, ids, &[], |u: &UserRow| u.id).await
    }

    /// One page of all users by id ascending.
    pub async fn list_users(&self, page: Page) -> Result<Vec<UserRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(page.after.unwrap_or(0))
            .bind(page.limit)
            .fetch_all(pool)
            .await)
    }

    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, AppError> {
        self.count(1);
        with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)
    }
}

/// A local account to create, of validated values (see `domain`), with the password already hashed.
#[derive(Clone, Debug)]
pub struct CreateAccount {
    pub email: Email,
    pub name: DisplayName,
    pub password_hash: String,
}

/// A user as an external identity provider describes them, for provisioning on first sight.
#[derive(Clone, Debug)]
pub struct ExternalUser {
    /// The provider's `sub`.
    pub external_id: String,
    /// The address from the token's `email` claim.
    pub email: Email,
    pub name: DisplayName,
    /// The provider vouches for the address (`email_verified: true`); only then may an existing local account
    /// with that address be linked to this identity.
    pub email_verified: bool,
    /// The role the token gives, only when `FOLIO_JWT_ROLE_CLAIM` is configured (then always `Some`).
    pub role: Option<Role>,
}

impl Store {
    /// A user by id (one statement), outside any loader: for authentication, before a request's loaders exist.
    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
        with_pool!(self, pool => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await)
    }

    /// A user and their password hash by (lower-case) email, for `login` and `folio token`.
    pub async fn user_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(UserRow, Option<String>)>, AppError> {
        self.count(1);
        // Emails are stored lower-case; each form uses its backend's case-insensitive unique index.
        const PG: &str = concat!(
            "SELECT ",
            user_cols!(),
            ", password_hash FROM users WHERE lower(email) = lower($1)"
        );
        const LITE: &str = concat!(
            "SELECT ",
            user_cols!(),
            ", password_hash FROM users WHERE email = $1"
        );
        let row: Option<UserWithHash> = match &self.db {
            Db::Postgres(pool) => sqlx::query_as(PG).bind(email).fetch_optional(pool).await,
            Db::Sqlite(pool) => sqlx::query_as(LITE).bind(email).fetch_optional(pool).await,
        }?;
        Ok(row.map(|r| (r.user, r.password_hash)))
    }

    /// Creates a local account. A taken email → `CONFLICT` with `fieldErrors.email`.
    pub async fn create_account(&self, account: &CreateAccount) -> Result<UserRow, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "INSERT INTO users (email, name, password_hash, role, plan, created_at, updated_at) ",
            "VALUES ($1, $2, $3, 'USER', 'FREE', $4, $4) RETURNING ",
            user_cols!()
        );
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(account.email.as_str())
            .bind(account.name.as_str())
            .bind(&account.password_hash)
            .bind(now)
            .fetch_one(pool)
            .await
            .map_err(email_taken))
    }

    /// Records that `user_id` signed in (or signed up) from `address` now.
    pub async fn record_sign_in(&self, user_id: i64, address: &str) -> Result<(), AppError> {
        self.count(1);
        const SQL: &str = "INSERT INTO sign_in_addresses (user_id, address, last_seen) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, address) DO UPDATE SET last_seen = excluded.last_seen";
        with_pool!(self, pool => sqlx::query(SQL)
            .bind(user_id)
            .bind(address)
            .bind(Utc::now().timestamp())
            .execute(pool)
            .await
            .map(|_| ()))
    }

    /// Whether the account with `email` has signed in from `address` since `since` (Unix seconds). `false` for
    /// an unknown email.
    pub async fn signed_in_from(
        &self,
        email: &str,
        address: &str,
        since: i64,
    ) -> Result<bool, AppError> {
        self.count(1);
        const PG: &str = "SELECT EXISTS (SELECT 1 FROM sign_in_addresses s JOIN users u ON u.id = s.user_id \
             WHERE lower(u.email) = lower($1) AND s.address = $2 AND s.last_seen >= $3)";
        const LITE: &str = "SELECT EXISTS (SELECT 1 FROM sign_in_addresses s JOIN users u ON u.id = s.user_id \
             WHERE u.email = $1 AND s.address = $2 AND s.last_seen >= $3)";
        let found: bool = match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(PG)
                    .bind(email)
                    .bind(address)
                    .bind(since)
                    .fetch_one(pool)
                    .await
            }
            Db::Sqlite(pool) => {
                sqlx::query_scalar(LITE)
                    .bind(email)
                    .bind(address)
                    .bind(since)
                    .fetch_one(pool)
                    .await
            }
        }?;
        Ok(found)
    }

    /// Renames a user; `None` when the user no longer exists.
    pub async fn update_user_name(
        &self,
        id: i64,
        name: &DisplayName,
    ) -> Result<Option<UserRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            user_cols!()
        );
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(id)
            .bind(name.as_str())
            .bind(Utc::now())
            .fetch_optional(pool)
            .await)
    }

    /// Sets a user's role in one transaction. Demoting the last admin is refused with `CONFLICT`, also when two
    /// admins demote each other at the same moment: on PostgreSQL the admins' rows are locked first, on SQLite
    /// the transaction holds the write lock from its start.
    pub async fn set_user_role(&self, id: i64, role: Role) -> Result<UserRow, AppError> {
        const LOCK_ADMINS: &str = "SELECT id FROM users WHERE role = 'ADMIN' FOR UPDATE";
        const CURRENT: &str = "SELECT role FROM users WHERE id = $1";
        const ADMINS: &str = "SELECT COUNT(*) FROM users WHERE role = 'ADMIN'";
        const UPDATE: &str = concat!(
            "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            user_cols!()
        );
        let row = with_tx!(self, tx => {
            if matches!(self.db, Db::Postgres(_)) {
                self.count(1);
                sqlx::query(LOCK_ADMINS).execute(&mut *tx).await?;
            }
            self.count(2);
            let current: Option<String> =
                sqlx::query_scalar(CURRENT).bind(id).fetch_optional(&mut *tx).await?;
            let Some(current) = current else {
                return Err(AppError::NotFound(format!("No user with id {id}.")));
            };
            let admins: i64 = sqlx::query_scalar(ADMINS).fetch_one(&mut *tx).await?;
            if current == Role::Admin.as_str() && role != Role::Admin && admins <= 1 {
                return Err(AppError::Conflict {
                    message: "The last admin cannot be demoted; make someone else an admin first."
                        .into(),
                    field_errors: Default::default(),
                });
            }
            self.count(1);
            let row: UserRow = sqlx::query_as(UPDATE)
                .bind(id)
                .bind(role.as_str())
                .bind(Utc::now())
                .fetch_one(&mut *tx)
                .await?;
            row
        });
        Ok(row)
    }

    /// Links the external identity `external_id` to the signed-in user `user_id` (the explicit, authenticated step
    /// `linkIdentity` takes). Never for an admin (`FORBIDDEN`), never an identity linked elsewhere or a second
    /// identity (`CONFLICT`). The local password stays: the owner decided, nothing is retired behind her back.
    pub async fn link_external(
        &self,
        user_id: i64,
        external_id: &str,
    ) -> Result<UserRow, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "UPDATE users SET external_id = $2, updated_at = $3 ",
            "WHERE id = $1 AND external_id IS NULL AND role <> 'ADMIN' RETURNING ",
            user_cols!()
        );
        let linked: Option<UserRow> = with_pool!(self, pool => sqlx::query_as(SQL)
        .bind(user_id)
        .bind(external_id)
        .bind(Utc::now())
        .fetch_optional(pool)
        .await
        .map_err(|err| {
            if super::is_unique_violation(&err) {
                AppError::Conflict {
                    message: "This identity is already linked to another account.".into(),
                    field_errors: Default::default(),
                }
            } else {
                AppError::from(err)
            }
        }))?;
        if let Some(user) = linked {
            return Ok(user);
        }
        match self.user_by_id(user_id).await? {
            Some(user) if user.role == Role::Admin => Err(AppError::Forbidden(
                "Admin accounts cannot be linked to an identity provider.".into(),
            )),
            Some(_) => Err(AppError::Conflict {
                message: "This account is already linked to an identity.".into(),
                field_errors: Default::default(),
            }),
            None => Err(AppError::NotFound("Your account no longer exists.".into())),
        }
    }

    /// The user behind an external identity, created on first sight, and whether this call created or changed
    /// it (so cached answers about it must go). An identity is never linked to an existing account here: a local
    /// account with the same email is a `CONFLICT`, whatever the provider says of the address, and its owner links
    /// the identity explicitly, signed in (`link_external`). With a configured role claim, the role follows the
    /// token.
    pub async fn provision_external(
        &self,
        who: &ExternalUser,
    ) -> Result<(UserRow, bool), AppError> {
        const BY_EXTERNAL: &str = concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE external_id = $1"
        );
        const INSERT: &str = concat!(
            "INSERT INTO users (email, name, external_id, role, plan, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, 'FREE', $5, $5) RETURNING ",
            user_cols!()
        );
        const SET_ROLE: &str = concat!(
            "UPDATE users SET role = $2, updated_at = $3 WHERE id = $1 RETURNING ",
            user_cols!()
        );
        let now = Utc::now();
        self.count(1);
        let found: Option<UserRow> = with_pool!(self, pool => sqlx::query_as(BY_EXTERNAL)
            .bind(&who.external_id)
            .fetch_optional(pool)
            .await)?;
        let mut changed = true;
        let user = match found {
            Some(user) => {
                changed = false;
                user
            }
            None => {
                {
                    {
                        self.count(1);
                        let role = who.role.unwrap_or(Role::User);
                        let inserted = with_pool!(self, pool => sqlx::query_as(INSERT)
                            .bind(who.email.as_str())
                            .bind(who.name.as_str())
                            .bind(&who.external_id)
                            .bind(role.as_str())
                            .bind(now)
                            .fetch_one(pool)
                            .await
                            .map_err(email_taken));
                        match inserted {
                            Ok(user) => user,
                            Err(
                                other @ AppError::Unavailable(_) | other @ AppError::Internal(_),
                            ) => {
                                return Err(other);
                            }
                            // A unique index refused the row: either two first requests of this identity raced
                            // (the other one created it) or a local account holds the email.
                            Err(_) => {
                                self.count(1);
                                let again: Option<UserRow> = with_pool!(self, pool => sqlx::query_as(BY_EXTERNAL)
                                    .bind(&who.external_id)
                                    .fetch_optional(pool)
                                    .await)?;
                                again.ok_or_else(|| AppError::Conflict {
                                    message:
                                        "An account with this email already exists. Sign in to it \
                                              and link this identity with `linkIdentity`."
                                            .into(),
                                    field_errors: Default::default(),
                                })?
                            }
                        }
                    }
                }
            }
        };
        match who.role {
            Some(role) if role != user.role => {
                self.count(1);
                let user = with_pool!(self, pool => sqlx::query_as(SET_ROLE)
                    .bind(user.id)
                    .bind(role.as_str())
                    .bind(now)
                    .fetch_one(pool)
                    .await)?;
                Ok((user, true))
            }
            _ => Ok((user, changed)),
        }
    }
}

/// A taken email is the client's problem, reported on the `email` field; anything else goes through as usual.
fn email_taken(err: sqlx::Error) -> AppError {
    if super::is_unique_violation(&err) {
        let mut field_errors = crate::error::FieldErrors::new();
        field_errors.insert(
            "email".into(),
            vec!["This email is already registered.".into()],
        );
        AppError::Conflict {
            message: "This email is already registered.".into(),
            field_errors,
        }
    } else {
        err.into()
    }
}

#[derive(sqlx::FromRow)]
struct UserWithHash {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: Option<String>,
}
