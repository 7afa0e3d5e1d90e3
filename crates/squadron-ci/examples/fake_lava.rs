//! The tests' fake LAVA server as a process of its own, for end-to-end
//! tests of the real binary: `cargo run -p squadron-ci --example fake_lava
//! [ADDRESS]` (default `127.0.0.1:0`) prints its REST root and XML-RPC
//! endpoint, one a line, then serves until interrupted.

#[path = "../tests/common/fake_lava.rs"]
mod fake_lava;

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let fake = fake_lava::FakeLava::start_on(&address).await;
    println!("{}", fake.rest_url());
    println!("{}", fake.rpc_url());
    tokio::signal::ctrl_c().await.expect("waiting for an interrupt");
}
