//! A real Prometheus on loopback for the MetricsPort tests: started with a 1 s scrape of one
//! target, killed on drop, and asked instant queries over its HTTP API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// The running Prometheus; killed and reaped on drop.
pub struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Prometheus scraping `target` every second, its data and config in `dir`; returns
/// it and its web address on 127.0.0.1.
pub fn start_prometheus(dir: &Path, target: SocketAddr) -> (Prometheus, SocketAddr) {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: fors\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let web: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Prometheus(child), web)
}

/// The samples of a Prometheus instant query, as `(labels, value)`; `None` when Prometheus
/// does not answer (yet).
pub fn prom_query(web: SocketAddr, query: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut s = TcpStream::connect_timeout(&web, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /api/v1/query?query={q} HTTP/1.0\r\nHost: {web}\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["data"]["result"]
        .as_array()?
        .iter()
        .map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse().ok()?)))
        .collect()
}

/// The first sample's value of an instant query, if any (`None` also while Prometheus does
/// not answer yet).
pub fn prom_value(web: SocketAddr, query: &str) -> Option<f64> {
    prom_query(web, query)?.first().map(|(_, v)| *v)
}
