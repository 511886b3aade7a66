//! A tokio runtime on a thread of its own, for clients that keep connections in tasks of the
//! runtime that first used them (the DNS resolver's name-server connections, the PostgreSQL
//! pool's). Run on a serving thread, every thread's calls would wait on whichever thread that
//! was (busy with a guest, or already stopped at shutdown); here they wait on none.

/// The thread and its runtime. The thread ends when this is dropped; tasks still running on it
/// are dropped with the runtime.
pub(crate) struct SideThread {
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl SideThread {
    /// Starts a thread called `name` running a current-thread runtime.
    pub(crate) fn start(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            runtime: handle,
            _stop: stop,
        })
    }

    /// Where to spawn the tasks that belong on this thread.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }
}
