//! What an idle session costs: the state machine its task holds, and no buffer.

use super::Session;
use crate::client::shared::Shared;
use bytes::BytesMut;
use std::sync::Arc;

/// The most an idle plain-TCP session's future may take in a debug build (a release build's
/// is smaller). It is allocated once per client for the client's life, so the per-client
/// budget in ARCHITECTURE.md counts on it; rare large paths (logins, plugin calls) are boxed.
const FUTURE_BUDGET: usize = 4 * 1024;

#[tokio::test]
async fn an_idle_session_holds_no_buffer_and_a_small_state_machine() {
    let cfg = tidegate_config::Config::from_toml(
        "[upstream.primary]\nport = 1\n[auth]\nmethod = \"trust\"\n[[users]]\nname = \"u\"\n",
    )
    .expect("config");
    let sh = Arc::new(Shared::new(cfg).expect("shared"));
    let topo = sh.topology();
    let login = crate::client::login_target(&topo.config, "u", "d").expect("user u");
    let pools = crate::client::pools_for(&sh, &topo, &login);
    let reg = sh
        .cancels
        .register(pools.iter().map(|p| p.target.clone()).collect());
    // A real TCP pair: the session type the broker runs for plain-TCP clients.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let _client = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let _other = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let (r, w) = server.into_split();
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
    let held = session.rbuf.capacity() + session.out.capacity() + session.bout.capacity();
    assert_eq!(held, 0, "no buffer before the client speaks");
    // The whole client task: startup, then this session.
    let (other, _) = listener.accept().await.expect("accept");
    let task = std::mem::size_of_val(&crate::client::handle_connection(sh.clone(), other, None));
    let state = std::mem::size_of_val(&session);
    let run = session.run();
    let future = std::mem::size_of_val(&run);
    println!(
        "idle session: {state} bytes of state, {future} bytes of future, {task} bytes of task"
    );
    assert!(
        future <= FUTURE_BUDGET,
        "the session future takes {future} bytes (budget {FUTURE_BUDGET})"
    );
    assert!(
        task <= FUTURE_BUDGET + 1024,
        "the client task's future takes {task} bytes"
    );
}
