//! The `folio` command line: `serve` (default), `migrate`, `schema`, `seed`, `token`.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand};

use crate::auth::OwnTokens;
use crate::config::{Config, Environment};
use crate::seed::{self, SeedPlan};
use crate::store::{Role, Store};
use crate::telemetry::Metrics;
use crate::{App, graphql};

/// Folio: the GraphQL API of a publishing product. Settings come from the environment (and `.env`); see the
/// README's configuration table.
#[derive(Parser, Debug)]
#[command(name = "folio", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, also accepted without the subcommand.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the API (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL); `schema.graphql` is exactly this output.
    Schema,
    /// Insert deterministic demo data.
    Seed(SeedArgs),
    /// Print a bearer token for an existing user (development only; refused when FOLIO_ENV=production). The
    /// token is the last line of the output.
    Token(TokenArgs),
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

#[derive(Args, Debug, Clone, Default)]
pub struct ServeArgs {
    /// Address to listen on [env: FOLIO_BIND] [default: 127.0.0.1:8000].
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Do not seed demo data into an empty embedded database [env: FOLIO_DEMO_DATA=false].
    #[arg(long)]
    pub no_demo: bool,
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

impl ServeArgs {
    fn apply(&self, config: &mut Config) {
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if self.no_demo {
            config.demo_data = false;
        }
    }
}

/// Runs the parsed command with `config` (already read from the environment).
pub async fn run(cli: Cli, mut config: Config) -> anyhow::Result<()> {
    match cli.command {
        None => serve(&cli.serve, config).await,
        Some(Command::Serve(args)) => serve(&args, config).await,
        Some(Command::Migrate) => {
            let store = open(&config).await?;
            store.migrate().await?;
            println!("migrations applied");
            Ok(())
        }
        Some(Command::Token(args)) => token(args, &config).await,
        Some(Command::Schema) => {
            print!("{}", graphql::schema::sdl());
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

async fn serve(args: &ServeArgs, mut config: Config) -> anyhow::Result<()> {
    args.apply(&mut config);
    App::build(&config).await?.run_until_stopped().await
}

async fn open(config: &Config) -> anyhow::Result<Store> {
    let metrics = Metrics::new()?;
    Store::connect(
        &config.database_url,
        config.db_max_connections,
        config.db_acquire_timeout,
        metrics.db_statements,
    )
    .await
}
