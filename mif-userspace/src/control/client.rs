//! The CLI's side of the control socket.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
};

use super::protocol::{MonitorEvent, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the mif daemon is not running (no control socket at {0})")]
    NotRunning(String),
    #[error("talking to the daemon at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon answered something unreadable: {0}")]
    Protocol(String),
    #[error("{0}")]
    Refused(String),
}

pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: String,
}

impl Client {
    pub fn connect(socket: &Path) -> Result<Self, ClientError> {
        let path = socket.display().to_string();
        let stream = UnixStream::connect(socket).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning(path.clone())
            }
            _ => ClientError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        let writer = stream.try_clone().map_err(|source| ClientError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
            path,
        })
    }

    fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let mut line =
            serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn read_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|source| ClientError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok((n > 0).then_some(line))
    }

    /// One request, one answer; an `Error` answer becomes `Refused`.
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.send(request)?;
        let line = self
            .read_line()?
            .ok_or_else(|| ClientError::Protocol("connection closed".into()))?;
        match Response::decode(&line).map_err(ClientError::Protocol)? {
            Response::Error(message) => Err(ClientError::Refused(message)),
            response => Ok(response),
        }
    }

    /// Starts a monitor stream and calls `each` for every event until the
    /// daemon goes away or `each` returns false.
    pub fn monitor(
        &mut self,
        mut each: impl FnMut(MonitorEvent) -> bool,
    ) -> Result<(), ClientError> {
        self.send(&Request::Monitor)?;
        while let Some(line) = self.read_line()? {
            let event = serde_json::from_str(&line)
                .map_err(|e| ClientError::Protocol(format!("{e}: {line}")))?;
            if !each(event) {
                break;
            }
        }
        Ok(())
    }
}
