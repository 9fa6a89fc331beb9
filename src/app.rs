//! The server's life cycle: build (connect, migrate, bind) and serve the
//! GraphQL API with the engine until shut down. The state it serves with
//! lives in `state`.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::Engine;
use crate::events::Topic;
use crate::mail::Mailer;
use crate::state::AppState;
use crate::workflows::scheduler::Scheduler;
use crate::{graphql, http};

/// A built server: connected, migrated and bound, not yet serving.
pub struct App {
    listener: TcpListener,
    state: AppState,
}

impl App {
    /// Connects to the database (and Redis), migrates and binds the port,
    /// with the system clock.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Clock::system()).await
    }

    /// As [`App::build`], reading time from `clock`.
    pub async fn build_with_clock(config: Config, clock: Clock) -> anyhow::Result<Self> {
        let mailer = Mailer::from_settings(&config.settings)?;
        Self::build_with(config, clock, mailer).await
    }

    /// As [`App::build`], reading time from `clock` and sending mail through
    /// `mailer`.
    pub async fn build_with(config: Config, clock: Clock, mailer: Mailer) -> anyhow::Result<Self> {
        let address = SocketAddr::new(config.settings.host, config.settings.port);
        let state = AppState::build_with(config, clock, mailer).await?;
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        Ok(Self { listener, state })
    }

    /// The address the server listens on (its port is real even when 0 was asked).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The instance's shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves requests and runs workers until `shutdown` resolves, then
    /// lets in-flight requests and steps finish (steps within the grace
    /// period), hands running executions back to the queue, and closes the
    /// database pool.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let schema = graphql::build_schema(&self.state.config.settings);
        let (shutting_down_tx, shutting_down) = tokio::sync::watch::channel(false);
        let router = http::router(self.state.clone(), schema, shutting_down.clone());
        let engine = Engine::start(&self.state).await;
        let interval =
            std::time::Duration::from_millis(self.state.config.settings.stream_recheck_ms);
        let rechecks = tokio::spawn(self.state.streams.clone().run(
            self.state.db.clone(),
            interval,
            shutting_down.clone(),
        ));
        let control = self.state.bus.subscribe(Topic::Control).await;
        let revocations = tokio::spawn(self.state.revocations.clone().run(
            self.state.db.clone(),
            self.state.clock.clone(),
            control,
            interval,
            shutting_down.clone(),
        ));
        let scheduler = Scheduler::start(&self.state, shutting_down.clone());
        let stop_engine = engine.stop_signal();
        let shutdown = async move {
            shutdown.await;
            let _ = shutting_down_tx.send(true);
            stop_engine.stop();
        };
        tracing::info!(address = %self.local_addr()?, "FlowPilot is serving GraphQL at /graphql");
        let served = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed");
        tokio::join!(scheduler.stopped(), engine.shutdown());
        rechecks.abort();
        revocations.abort();
        self.state.db.clone().close().await.ok();
        tracing::info!("FlowPilot stopped");
        served
    }
}
