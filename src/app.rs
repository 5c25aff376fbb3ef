//! `App`: the wired service. `App::build` opens the pool, migrates, builds the schema and router and binds the
//! listener; `run_until_stopped` serves until SIGTERM or Ctrl-C. Tests build the real app on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::billing::Verifier;
use crate::cache::{Cache, CacheMode};
use crate::config::{Config, DatabaseKind, Environment};
use crate::graphql::LoginLimits;
use crate::graphql::{Limits, SchemaData, build_schema, sdl_of};
use crate::http::{AppState, Shared, admin_router, router};
use crate::live::{self, Bus};
use crate::operation::persisted::{Manifest, Persisted, Registry};
use crate::operation::{Pipeline, PipelineParts};
use crate::ratelimit::{Rate, RateLimiter};
use crate::redis_conn::RedisConn;
use crate::replicas::Replicas;
use crate::seed::{self, SeedPlan};
use crate::store::Store;
use crate::telemetry::Metrics;
use std::time::Duration;

/// A started, not yet serving, Folio.
pub struct App {
    listener: TcpListener,
    addr: SocketAddr,
    /// The operators' listener, if `FOLIO_ADMIN_BIND` is set.
    admin: Option<TcpListener>,
    state: AppState,
    /// Tells live connections the server is shutting down.
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl App {
    /// Connects, migrates, seeds demo data into an empty embedded database (if enabled), and binds.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.check_for_serving()?;
        let metrics = Metrics::new()?;
        let store = Store::connect(&config.database(), metrics.db_statements.clone()).await?;
        store.migrate().await?;
        if config.demo_data
            && store.kind() == DatabaseKind::Sqlite
            && store.count_users().await? == 0
        {
            let plan = SeedPlan {
                users: 12,
                posts: 60,
                comments: 300,
                seed: 7,
                progress: false,
            };
            let report = seed::run(&store, plan).await?;
            tracing::info!(
                users = report.users,
                posts = report.posts,
                comments = report.comments,
                "seeded demo data"
            );
        }
        let limits = Limits {
            max_depth: config.max_depth,
            max_complexity: config.max_complexity,
            max_directives: config.edge.max_directives,
            introspection: config.edge.introspection,
            // One rule with introspection: suggestions name fields too.
            suggestions: config.edge.introspection,
        };
        let redis = match &config.cache.redis {
            Some(target) => {
                let conn = RedisConn::new(target, config.cache.redis_timeout)?;
                conn.warm_up().await;
                Some(Arc::new(conn))
            }
            None => None,
        };
        let bus = Arc::new(Bus::new(
            redis.clone(),
            &config.cache.prefix,
            metrics.live.bus_errors.clone(),
        ));
        bus.start();
        let live = Arc::new(live::Registry::new(
            config.live.max_subscriptions,
            metrics.live.clone(),
        ));
        live.start(&bus);
        let replicas = Replicas::start(
            &config.replicas,
            &store,
            &config.database(),
            redis.clone(),
            &config.cache.prefix,
            metrics.replicas.clone(),
            metrics.db_statements.clone(),
        )?;
        let cache = Arc::new(Cache::new(
            &config.cache,
            redis.clone(),
            metrics.cache.clone(),
            bus.clone(),
            replicas.clone(),
        )?);
        let manifest = Manifest::load(&config.documents.manifests)?;
        if !manifest.is_empty() {
            tracing::info!(
                documents = manifest.len(),
                mode = ?config.documents.mode,
                "trusted documents loaded"
            );
        }
        let persisted = Persisted::new(
            config.documents.mode,
            manifest,
            Registry::new(
                redis.clone(),
                &config.cache.prefix,
                metrics.persisted_errors.clone(),
            ),
            metrics.documents_unknown.clone(),
        );
        let limiter = Arc::new(RateLimiter::new(
            redis,
            &config.cache.prefix,
            metrics.rate_limit_errors.clone(),
        ));
        let attempts = config.edge.login_attempts;
        let login_limits = LoginLimits {
            limiter: limiter.clone(),
            per_email_address: Rate {
                interval: Duration::from_secs(15 * 60) / attempts,
                burst: attempts,
            },
            per_address: Rate {
                interval: Duration::from_secs(15 * 60) / (attempts * 5),
                burst: attempts * 5,
            },
            per_email_unknown: Rate {
                interval: Duration::from_secs(60 * 60) / (attempts * 3),
                burst: attempts * 3,
            },
            known_for: Duration::from_secs(30 * 24 * 3600),
            signups: (config.edge.signups_per_hour > 0).then(|| Rate {
                interval: Duration::from_secs(60 * 60) / config.edge.signups_per_hour,
                burst: config.edge.signups_per_hour,
            }),
        };
        if store.kind() == DatabaseKind::Postgres && config.cache.mode == CacheMode::Memory {
            tracing::warn!(
                "the response cache is in-process: with several instances, set REDIS_URL (or FOLIO_CACHE=off), \
                 since a mutation purges only the instance it ran on"
            );
        }
        let auth = Arc::new(Authenticator::new(
            &config.auth,
            config.env,
            store.clone(),
            cache.clone(),
        )?);
        let data = SchemaData {
            store: store.clone(),
            auth: auth.clone(),
            cache: cache.clone(),
            login_limits,
        };
        let schema = build_schema(Some(data), limits);
        let sdl: Arc<str> = sdl_of(&schema).into();
        let stripe = Verifier::from_config(&config.stripe).map(Arc::new);
        if stripe.is_none() {
            tracing::info!(
                "STRIPE_WEBHOOK_SECRET is not set: POST /api/webhooks/stripe answers 503 until it is"
            );
        }
        let edge = Arc::new(config.edge.clone());
        let pipeline = Pipeline::new(PipelineParts {
            schema,
            store: store.clone(),
            cache: cache.clone(),
            limits: edge.clone(),
            max_complexity: config.max_complexity,
            persisted,
            max_cost: config.documents.max_cost,
            cost_extension: config.documents.cost_extension,
            metrics: metrics.clone(),
            live,
            replicas,
            trace_documents: config.tracing.documents,
        })?;
        let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
        let state = AppState::new(Shared {
            pipeline,
            store,
            auth,
            cache,
            limiter,
            rate: Rate::per_minute(config.edge.rate_per_min, config.edge.rate_burst),
            metrics,
            sdl,
            graphiql: config.graphiql,
            edge,
            stripe,
            live: Arc::new(config.live.clone()),
            shutdown: shutdown_rx,
        });
        let listener = TcpListener::bind(config.bind).await.with_context(|| {
            format!("could not listen on {} (FOLIO_BIND / --bind)", config.bind)
        })?;
        let addr = listener.local_addr()?;
        let admin = match config.admin_bind {
            Some(bind) => Some(TcpListener::bind(bind).await.with_context(|| {
                format!("could not listen on {bind} (FOLIO_ADMIN_BIND / --admin-bind)")
            })?),
            None => {
                if config.env == Environment::Production {
                    tracing::warn!(
                        "FOLIO_ADMIN_BIND is not set: /metrics is not served in production"
                    );
                }
                None
            }
        };
        Ok(Self {
            listener,
            addr,
            admin,
            state,
            shutdown,
        })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The operators' listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The store, for tests and tools that run beside the server.
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// The operation pipeline, which every transport calls (tests drive it without HTTP).
    pub fn pipeline(&self) -> &Pipeline {
        &self.state.pipeline
    }

    /// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then stops accepting, finishes in-flight requests and closes the pool.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, "folio listening; GraphiQL at http://{}/graphql", self.addr);
        let store = self.state.store.clone();
        let live = self.state.metrics.live.connections.clone();
        if let Some(admin) = self.admin {
            let app = admin_router(self.state.clone());
            let mut stopping = self.shutdown.subscribe();
            tracing::info!(addr = ?admin.local_addr().ok(), "admin listener (metrics, schema, health)");
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                };
                if let Err(err) = axum::serve(admin, app).with_graceful_shutdown(stop).await {
                    tracing::error!(error = %err, "admin listener failed");
                }
            });
        }
        let app = axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
            SocketAddr,
        >(router(self.state));
        let shutdown = self.shutdown;
        let stop = async move {
            stop.await;
            // WebSockets (which the server no longer tracks once upgraded) close with 1001; event streams end.
            let _ = shutdown.send(true);
        };
        // No Nagle delay: a live push (or any small response after another) goes out at once instead of waiting
        // up to 40 ms for the client's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("server error")?;
        // Let the live connections send their close frames.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while live.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        store.close().await;
        tracing::info!("folio stopped");
        Ok(())
    }
}

/// Completes on SIGTERM (how orchestrators stop a process) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
