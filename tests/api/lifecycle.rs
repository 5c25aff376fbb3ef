//! Start, readiness when the database goes away, and graceful shutdown with a request in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, TestDb, bulk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone_while_healthz_stays_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/readyz").await.status(), 200);
    if app.db.is_postgres() {
        app.db.drop_now().await;
    } else {
        // An embedded database cannot be taken away from under an open file; closing the pool is the same
        // failure from the service's side: no connection can be had.
        app.store.close().await;
    }
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 503);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(app.get("/healthz").await.status(), 200);

    // Queries get a coded error, not a hang or a leak of driver text.
    let body = app.gql("{ posts { totalCount } }", json!({})).await;
    let err = &body["errors"][0];
    assert_eq!(err["extensions"]["code"], "SERVICE_UNAVAILABLE", "{body}");
}

/// Sends the headers and the first bytes of a GraphQL POST, leaving the request in flight; returns the stream
/// and the rest of the body.
fn start_request(addr: &str) -> (TcpStream, String) {
    let body = json!({ "query": "{ posts { totalCount } }" }).to_string();
    let (head, tail) = body.split_at(10);
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    (stream, tail.to_owned())
}

/// Sends the rest of the body and reads the whole response (the server closes the connection as it stops).
fn finish_request(mut stream: TcpStream, tail: &str) -> String {
    stream.write_all(tail.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_shutdown_finishes_the_request_in_flight() {
    let mut app = TestApp::spawn().await;
    bulk(&app.store, 2, 0).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let (stream, tail) = start_request(&addr);
    tokio::time::sleep(Duration::from_millis(200)).await;

    app.trigger_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !app.server_finished(),
        "the server waits for the request in flight"
    );

    let response = finish_request(stream, &tail);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"totalCount\":2"), "{response}");
    app.shutdown().await.expect("clean exit");
}

/// The real binary: SIGTERM while a request is in flight → the request completes, then the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let db = TestDb::create().await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_folio"))
        .args(["serve", "--bind", "127.0.0.1:0", "--no-demo"])
        .env("DATABASE_URL", db.url())
        .env("FOLIO_LOG", "info")
        .env("FOLIO_LOG_FORMAT", "json")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start folio");
    // The listening line carries the bound address.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        assert!(
            Instant::now() < deadline,
            "folio did not report its address"
        );
        let line = lines.next().expect("a log line").expect("utf-8");
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        if let Some(addr) = v["addr"].as_str() {
            break addr.to_owned();
        }
    };
    // Keep draining logs so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let (stream, tail) = start_request(&addr);
    std::thread::sleep(Duration::from_millis(300));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "folio waits for the request in flight"
    );

    let response = finish_request(stream, &tail);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"totalCount\":0"), "{response}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "folio did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit}");
}
