//! Entry points for the cargo-fuzz targets in `fuzz/`: the same code paths a client's bytes
//! take, without sockets where possible. Every function must return normally for any input.

use crate::broker::Shared;
use crate::client::Session;
use crate::wire::auth::ScramServer;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// Startup packet decoding and parameter validation.
pub fn startup(data: &[u8]) {
    let mut packet = BytesMut::with_capacity(data.len() + 4);
    packet.extend_from_slice(&((data.len() + 4) as i32).to_be_bytes());
    packet.extend_from_slice(data);
    if let Ok(params) = crate::client::decode_startup(packet) {
        let _ = crate::client::client_params(params, "postgres");
    }
}

/// Both SCRAM client messages, split at the first NUL of `data`.
pub fn scram(data: &[u8]) {
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(p) => (&data[..p], &data[p + 1..]),
        None => (data, &data[..0]),
    };
    let v = tidegate_config::ScramVerifier::derive("pw", b"salt", 1);
    let mut s = ScramServer::new(Some(&v), "u", b"k");
    if s.client_first(first).is_ok() {
        let _ = s.client_final(last);
    }
    let _ = tidegate_sql::session_state::scan(data);
}

/// A reusable harness that feeds bytes to a real [`Session`] as an authenticated client's
/// messages. Its upstream is unreachable (port 1), so statements end in clean errors.
pub struct SessionHarness {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
}

impl SessionHarness {
    /// Builds the harness (once per fuzz process).
    pub fn new() -> SessionHarness {
        let cfg = tidegate_config::Config::from_toml(
            "[upstream.primary]\nport = 1\n[pool]\nconnect_timeout = \"50ms\"\nsize = 1\n\
             [limits]\nmax_message_bytes = 65536\n[auth]\nmethod = \"trust\"\n[[users]]\nname = \"u\"\n",
        )
        .expect("valid fuzz config");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let shared = Arc::new(Shared::new(cfg).expect("shared"));
        SessionHarness { rt, shared }
    }

    /// Runs one session over `data` (the client's bytes after authentication).
    pub fn run(&self, data: &[u8]) {
        let sh = self.shared.clone();
        self.rt.block_on(async move {
            let topo = sh.topology();
            let login = crate::client::login_target(&topo.config, "u", "d").expect("user u");
            let pools = crate::client::pools_for(&sh, &topo, &login);
            let reg = sh
                .cancels
                .register(pools.iter().map(|p| p.target.clone()).collect());
            let (client, server) = tokio::io::duplex(1 << 16);
            let (r, w) = tokio::io::split(server);
            let session = Session::new(
                sh.clone(),
                topo,
                login,
                pools,
                "u".into(),
                r,
                w,
                BytesMut::new(),
                Vec::new(),
                reg.slot.clone(),
            );
            let (mut cr, mut cw) = tokio::io::split(client);
            let feed = async {
                let _ = cw.write_all(data).await;
                let _ = cw.shutdown().await;
            };
            let drain = async {
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut cr, &mut sink).await;
            };
            let run = session.run();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                tokio::join!(feed, drain, run)
            })
            .await;
        });
    }
}

impl Default for SessionHarness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn harness_survives_a_few_handwritten_inputs() {
        super::startup(b"\0\x03\0\0user\0u\0\0");
        super::startup(b"");
        super::scram(b"n,,n=,r=abc\0c=biws,r=abc,p=AAAA");
        let h = super::SessionHarness::new();
        h.run(b"Q\0\0\0\x0dSELECT 1;\0X\0\0\0\x04");
        h.run(b"P\0\0\0\x08s\0\0\0B\0\0\0\x04S\0\0\0\x04");
        h.run(&[0xff; 64]);
    }
}
