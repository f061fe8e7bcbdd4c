//! The daemon's side of the control socket. Connections are served on
//! their own tasks; requests that need the daemon's state are handed to the
//! daemon's loop as [`Command`]s, so all state stays in one place.
use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use log::debug;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{broadcast, mpsc, oneshot},
};

use super::{
    peer::Peer,
    protocol::{MonitorEvent, Request, Response},
};
use crate::backoff::Backoff;

/// A request for the daemon's loop, with where to send the answer.
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
    /// The asking process, for what is answered per caller (`choices`,
    /// `process_pvd`).
    pub peer: Peer,
}

/// Who may change things besides root.
#[derive(Debug, Clone)]
pub struct Writers {
    pub group: Option<(String, u32)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the control socket at {}", path.display())]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The channels the daemon's loop uses: commands in, monitor events out.
pub struct Control {
    pub commands: mpsc::Receiver<Command>,
    pub monitor: broadcast::Sender<MonitorEvent>,
    path: PathBuf,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the socket (replacing a stale one: the caller holds the instance
/// lock, so no live daemon owns it) and starts serving.
pub fn start(path: &Path, writers: Writers) -> Result<Control, ServerError> {
    let fail = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(fail)?;
    // Anyone may connect and read; changes are checked per request.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    let (commands_tx, commands) = mpsc::channel(16);
    let (monitor, _) = broadcast::channel(256);
    let monitor_tx = monitor.clone();
    tokio::spawn(async move {
        // An accept fails while the process is out of descriptors (EMFILE):
        // the socket must outlive that, without spinning meanwhile.
        let mut backoff = Backoff::new("control socket");
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    backoff.succeeded();
                    let (commands, monitor, writers) =
                        (commands_tx.clone(), monitor_tx.clone(), writers.clone());
                    tokio::spawn(async move {
                        if let Err(e) = serve(stream, commands, monitor, writers).await {
                            debug!("control connection: {e}");
                        }
                    });
                }
                Err(e) => backoff.failed(&e).await,
            }
        }
    });
    Ok(Control {
        commands,
        monitor,
        path: path.to_path_buf(),
    })
}

async fn serve(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
    monitor: broadcast::Sender<MonitorEvent>,
    writers: Writers,
) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let peer = Peer {
        pid: cred.pid(),
        pidfd: super::peer::peer_pidfd(&stream).map(std::sync::Arc::new),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        let line = match next_line(&mut reader, &mut buf).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                send(&mut write, &Response::Error(e.to_string())).await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let request = match Request::decode(&line) {
            Ok(r) => r,
            Err(e) => {
                send(&mut write, &Response::Error(e)).await?;
                continue;
            }
        };
        if request.is_change() {
            if let Err(why) = may_change(cred.uid(), cred.gid(), cred.pid(), &writers) {
                send(&mut write, &Response::Error(why)).await?;
                continue;
            }
        }
        if request == Request::Monitor {
            let mut events = monitor.subscribe();
            let mut line = serde_json::to_string(&MonitorEvent::Subscribed).unwrap_or_default();
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        let mut line = serde_json::to_string(&event).unwrap_or_default();
                        line.push('\n');
                        write.write_all(line.as_bytes()).await?;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
            }
        }
        let (reply, answer) = oneshot::channel();
        let command = Command {
            request,
            reply,
            peer: peer.clone(),
        };
        if commands.send(command).await.is_err() {
            return Ok(());
        }
        let response = answer
            .await
            .unwrap_or_else(|_| Response::Error("the daemon is stopping".into()));
        send(&mut write, &response).await?;
    }
    Ok(())
}

/// The longest request served. A policy is a few hundred bytes; without a
/// bound, any local user (the socket is 0666) could make the daemon buffer
/// one endless line until it runs out of memory.
pub const MAX_REQUEST: usize = 64 << 10;

/// One request line without its newline; `None` at the end of the stream.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    buf.clear();
    let n = (&mut *reader)
        .take(MAX_REQUEST as u64 + 1)
        .read_until(b'\n', buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_REQUEST {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("request longer than {MAX_REQUEST} bytes"),
        ));
    }
    String::from_utf8(std::mem::take(buf))
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "request is not UTF-8"))
}

async fn send(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    response: &Response,
) -> std::io::Result<()> {
    let mut line = serde_json::to_string(response).unwrap_or_default();
    line.push('\n');
    write.write_all(line.as_bytes()).await
}

/// Root, or a member (primary or supplementary) of the writers' group.
fn may_change(uid: u32, gid: u32, pid: Option<i32>, writers: &Writers) -> Result<(), String> {
    if uid == 0 {
        return Ok(());
    }
    if let Some((name, group)) = &writers.group {
        let supplementary = pid.map(supplementary_groups).unwrap_or_default();
        if gid == *group || supplementary.contains(group) {
            return Ok(());
        }
        return Err(format!(
            "refused: changes need root or membership of group {name} (you are uid {uid})"
        ));
    }
    Err(format!(
        "refused: changes need root (you are uid {uid}); a config [control] group may allow others"
    ))
}

/// The `Groups:` line of /proc/<pid>/status.
fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_lines_are_bounded() {
        let mut buf = Vec::new();
        let mut two: &[u8] = b"{\"op\":\"status\"}\n{\"op\":\"pvds\"}";
        assert_eq!(
            next_line(&mut two, &mut buf).await.unwrap().as_deref(),
            Some("{\"op\":\"status\"}")
        );
        assert_eq!(
            next_line(&mut two, &mut buf).await.unwrap().as_deref(),
            Some("{\"op\":\"pvds\"}")
        );
        assert_eq!(next_line(&mut two, &mut buf).await.unwrap(), None);

        let endless = vec![b'x'; MAX_REQUEST + 10];
        let err = next_line(&mut endless.as_slice(), &mut buf)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        let mut exact = vec![b'x'; MAX_REQUEST];
        exact.push(b'\n');
        assert!(next_line(&mut exact.as_slice(), &mut buf).await.is_ok());
    }

    #[test]
    fn only_root_or_the_group_may_change() {
        let none = Writers { group: None };
        assert!(may_change(0, 0, None, &none).is_ok());
        assert!(may_change(1000, 1000, None, &none)
            .unwrap_err()
            .contains("uid 1000"));
        let group = Writers {
            group: Some(("mifadm".into(), 4242)),
        };
        assert!(may_change(1000, 4242, None, &group).is_ok());
        assert!(may_change(1000, 1000, None, &group)
            .unwrap_err()
            .contains("group mifadm"));
    }
}
