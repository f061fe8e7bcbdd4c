//! `lab-peer http`: a network's connectivity-check server, what mif's
//! validation probes (and plain HTTP clients of the tests) talk to.
//!
//! ```text
//! lab-peer http --name NAME --listen ADDR:PORT [--listen ADDR:PORT ...]
//!               --state DIR [--watch-stdin]
//! ```
//!
//! Serves HTTP/1.1 on every `--listen` address (one thread each). Every
//! request is first appended to `DIR/requests.log` as one JSON object per
//! line, `{"source":IP,"method":M,"path":TARGET,"host":HOST-or-null}`, and
//! only then answered, so a client that got its answer can rely on the log
//! holding its request. The answer depends on `DIR/answer`, read again for
//! every request (tests switch it by writing a temporary file and renaming
//! it over, so a request never sees half a file):
//!
//! - absent, empty or `204`: `204 No Content`, whatever the path (the
//!   network is validated);
//! - `redirect URL`: `302 Found` with `Location: URL` (a captive portal);
//! - `page`: `200 OK` with a small HTML page (a portal answering in place);
//! - anything else: `500`, so that a mistyped answer file shows up as a
//!   failure instead of passing for a working network.
//!
//! `GET /whoami` is answered `200 OK` with `NAME SOURCE` in every mode: it
//! tells a test which network and source address a plain HTTP client used,
//! as `lab-peer serve` does for raw sockets.
//!
//! Prints `ready` once every listener is bound; with `--watch-stdin` it
//! exits when its stdin reaches EOF (the lab is gone, even if it was killed
//! without running its cleanup).

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tiny_http::{Header, Request, Response, Server};

use super::{op, Args};

/// What a captive portal answering in place serves instead of a 204.
const PORTAL_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Lab portal</title></head>\
<body><p>Accept the terms to use this network.</p></body></html>\n";

/// The state a server shares between its listeners.
struct State {
    name: String,
    dir: PathBuf,
    /// Appends of several listeners never interleave within a line.
    log: Mutex<()>,
}

pub fn http(args: &Args) -> Result<(), String> {
    let name = args.required("name")?.to_owned();
    let dir = PathBuf::from(args.required("state")?);
    let listen = args.all("listen");
    if listen.is_empty() {
        return Err("--listen is required".into());
    }
    let mut servers = Vec::new();
    for addr in listen {
        let addr: SocketAddr = addr.parse().map_err(|_| format!("bad --listen {addr:?}"))?;
        let server = Server::http(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        servers.push(server);
    }
    let state = Arc::new(State {
        name,
        dir,
        log: Mutex::new(()),
    });
    let workers: Vec<_> = servers
        .into_iter()
        .map(|server| {
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    if let Err(e) = state.handle(request) {
                        // Logged, not fatal: one failed request must not
                        // take the network's server away.
                        eprintln!("lab-peer http: {e}");
                    }
                }
            })
        })
        .collect();

    // The lab waits for this line before it lets tests run.
    let mut stdout = io::stdout();
    writeln!(stdout, "ready")
        .and_then(|()| stdout.flush())
        .map_err(op("write"))?;

    if args.flag("watch-stdin") {
        let _ = io::stdin().lock().read_to_end(&mut Vec::new());
        return Ok(());
    }
    for worker in workers {
        let _ = worker.join();
    }
    Ok(())
}

/// How the server answers, from the answer file.
enum Mode {
    NoContent,
    Redirect(String),
    Page,
    Unknown(String),
}

impl Mode {
    fn read(dir: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(dir.join("answer")) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Mode::NoContent),
            Err(e) => return Err(format!("reading the answer file: {e}")),
        };
        let text = text.trim();
        Ok(if text.is_empty() || text == "204" {
            Mode::NoContent
        } else if text == "page" {
            Mode::Page
        } else if let Some(url) = text.strip_prefix("redirect ").map(str::trim) {
            Mode::Redirect(url.to_owned())
        } else {
            Mode::Unknown(text.to_owned())
        })
    }
}

impl State {
    fn handle(&self, request: Request) -> Result<(), String> {
        let source = request
            .remote_addr()
            .map(|a| a.ip().to_canonical())
            .ok_or("request without a peer address")?;
        let host = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Host"))
            .map(|h| h.value.as_str().to_owned());
        let method = request.method().as_str().to_owned();
        let path = request.url().to_owned();
        let line = serde_json::json!({
            "source": source.to_string(),
            "method": method,
            "path": path,
            "host": host,
        });
        self.append(&format!("{line}\n"))?;

        if method == "GET" && path == "/whoami" {
            let body = format!("{} {source}\n", self.name);
            return request
                .respond(Response::from_string(body))
                .map_err(op("respond"));
        }
        let response = match Mode::read(&self.dir)? {
            Mode::NoContent => Response::from_string("").with_status_code(204),
            Mode::Redirect(url) => {
                let location = Header::from_bytes("Location", url.as_bytes())
                    .map_err(|()| format!("bad redirect URL {url:?}"))?;
                Response::from_string(format!("<a href=\"{url}\">Log in</a>\n"))
                    .with_status_code(302)
                    .with_header(location)
                    .with_header(html())
            }
            Mode::Page => Response::from_string(PORTAL_PAGE).with_header(html()),
            Mode::Unknown(text) => {
                Response::from_string(format!("unknown answer {text:?}\n")).with_status_code(500)
            }
        };
        request.respond(response).map_err(op("respond"))
    }

    /// One line, in one write(2), complete before the request is answered.
    fn append(&self, line: &str) -> Result<(), String> {
        let _guard = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join("requests.log");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}

fn html() -> Header {
    Header::from_bytes("Content-Type", "text/html; charset=utf-8").expect("a valid header")
}
