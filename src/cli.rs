//! The `folio` command line: `serve` (default), `migrate`, `schema`, `seed`, `token`, `documents check`.

use clap::{Args, Parser, Subcommand};

use crate::auth::OwnTokens;
use crate::config::{Config, Environment, Settings};
use crate::operation::check;
use crate::operation::persisted::Manifest;
use crate::seed::{self, SeedPlan};
use crate::store::{Role, Store};
use crate::telemetry::Metrics;
use crate::{App, graphql};

/// Folio: the GraphQL API of a publishing product. Every setting below is read from its environment variable
/// (and `.env`) unless given as a flag.
#[derive(Parser, Debug)]
#[command(name = "folio", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

/// `folio schema`.
#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Print what WebSocket and SSE serve besides the subgraph schema (the `Subscription` type and `@live`);
    /// `subscriptions.graphql` is exactly this output.
    #[arg(long)]
    pub subscriptions: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL); `schema.graphql` is exactly this output.
    Schema(SchemaArgs),
    /// Insert deterministic demo data.
    Seed(SeedArgs),
    /// Check persisted documents before they deploy (see `folio documents check --help`).
    #[command(subcommand)]
    Documents(DocumentsCommand),
    /// Print a bearer token for an existing user (development only; refused when FOLIO_ENV=production). The
    /// token is the last line of the output.
    Token(TokenArgs),
}

#[derive(Subcommand, Debug)]
pub enum DocumentsCommand {
    /// Validate every document of the manifests against the schema, price it, and hold it against this
    /// configuration's limits; prints a table and exits non-zero if any document is invalid or would be refused.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The schema to check against (e.g. the `schema.graphql` about to ship); default: this build's.
    #[arg(long = "schema", value_name = "FILE")]
    pub schema_file: Option<std::path::PathBuf>,
    /// Manifests: Apollo's persisted-query-manifest.json, graphql-codegen's persisted-documents.json or Relay's
    /// persisted_queries.json.
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// The user's email.
    #[arg(long)]
    pub email: String,
    /// Also set the user's role in the database first (the development way to get an admin).
    #[arg(long, value_enum, ignore_case = true)]
    pub role: Option<RoleArg>,
}

/// `--role` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
#[value(rename_all = "UPPER")]
pub enum RoleArg {
    User,
    Admin,
}

#[derive(Args, Debug, Clone)]
pub struct SeedArgs {
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    #[arg(long, default_value_t = 1_000)]
    pub posts: u64,
    #[arg(long, default_value_t = 10_000)]
    pub comments: u64,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Cli {
    /// The command line and the environment, with every setting declared (see `config::declare`). Exits with
    /// clap's message (code 2) when they do not parse, and prints help or the version when asked.
    pub fn parse_declared() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = crate::config::declare(Self::command()).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Runs the parsed command with `config` (built from `cli.settings`).
pub async fn run(command: Option<Command>, mut config: Config) -> anyhow::Result<()> {
    match command {
        None | Some(Command::Serve) => App::build(&config).await?.run_until_stopped().await,
        Some(Command::Migrate) => {
            let store = open(&config).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Token(args)) => token(args, &config).await,
        Some(Command::Documents(DocumentsCommand::Check(args))) => check_documents(args, &config),
        Some(Command::Schema(args)) => {
            if args.subscriptions {
                print!("{}", graphql::schema::subscriptions_sdl());
            } else {
                print!("{}", graphql::schema::sdl());
            }
            Ok(())
        }
        Some(Command::Seed(args)) => {
            config.demo_data = false;
            let store = open(&config).await?;
            store.migrate().await?;
            let plan = SeedPlan {
                users: args.users,
                posts: args.posts,
                comments: args.comments,
                seed: args.seed,
                progress: true,
            };
            let report = seed::run(&store, plan).await?;
            println!(
                "seeded {} users, {} posts, {} comments in {:.1}s",
                report.users,
                report.posts,
                report.comments,
                report.elapsed.as_secs_f64()
            );
            Ok(())
        }
    }
}

/// `folio documents check`.
fn check_documents(args: CheckArgs, config: &Config) -> anyhow::Result<()> {
    let manifest = Manifest::load(&args.manifests)?;
    let sdl = match &args.schema_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        // Subscriptions are checked too: they run over WebSocket and SSE.
        None => graphql::schema::sdl() + &graphql::schema::subscriptions_sdl(),
    };
    let checked = check::check(&manifest, &sdl, config)?;
    print!("{}", check::table(&checked));
    let refused = checked.iter().filter(|c| !c.problems.is_empty()).count();
    if refused > 0 {
        anyhow::bail!(
            "{refused} of {} documents are invalid or would be refused",
            checked.len()
        );
    }
    println!(
        "{} documents checked: all valid, all within the limits",
        checked.len()
    );
    Ok(())
}

/// `folio token`: looks the user up, optionally sets their role, and prints a token signed like `login`'s.
async fn token(args: TokenArgs, config: &Config) -> anyhow::Result<()> {
    if config.env == Environment::Production {
        anyhow::bail!(
            "`folio token` is refused when FOLIO_ENV=production; sign in through `login` or your identity provider"
        );
    }
    let store = open(config).await?;
    store.migrate().await?;
    let email = args.email.trim().to_lowercase();
    let Some((mut user, _)) = store.user_by_email(&email).await? else {
        anyhow::bail!(
            "no user has the email {email}; sign up first (mutation signUp) or seed demo data"
        );
    };
    if let Some(role) = args.role {
        let role = match role {
            RoleArg::User => Role::User,
            RoleArg::Admin => Role::Admin,
        };
        user = store.set_user_role(user.id, role).await?;
        println!("{} is now {}", user.email, user.role.as_str());
    }
    let tokens = OwnTokens::new(&config.auth, config.env)?;
    let token = tokens.issue(user.id, user.role)?;
    println!(
        "token for user {} ({}, {}), valid for {} s; send it as `Authorization: Bearer <token>`:",
        user.id,
        user.email,
        user.role.as_str(),
        config.auth.token_ttl.as_secs()
    );
    println!("{token}");
    Ok(())
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    let metrics = Metrics::new()?;
    Store::connect(&config.database(), metrics.db_statements).await
}
