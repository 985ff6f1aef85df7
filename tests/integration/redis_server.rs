//! A real `redis-server` (Debian's package) for the tests: one per test, on a free loopback port,
//! persistence off, stopped on drop. `.ci/run` installs the package when it is missing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    password: Option<String>,
    /// Certificate and key files: the server then speaks TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with_password(None)
    }

    /// A server that requires `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        let mut server = RedisServer {
            port: crate::common::free_port(),
            password: password.map(str::to_string),
            tls: None,
            child: None,
        };
        server.restart();
        server
    }

    /// A server speaking only TLS, with this certificate and key (no client certificates).
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        let mut server = RedisServer {
            port: crate::common::free_port(),
            password: None,
            tls: Some((cert.to_path_buf(), key.to_path_buf())),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts the server again on the same port (after `kill`), empty.
    pub fn restart(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((cert, key)) => command.args([
                "--port",
                "0",
                "--tls-port",
                &self.port.to_string(),
                "--tls-cert-file",
                cert.to_str().unwrap(),
                "--tls-key-file",
                key.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ]),
        };
        command.args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            // DEBUG SLEEP stands in for a slow server.
            "--enable-debug-command",
            "local",
        ]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run redis-server ({err}); install Debian's redis-server package \
                     (apt-get install redis-server), as .ci/run does"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        if self.tls.is_some() {
            crate::common::wait_until_listening(([127, 0, 0, 1], self.port).into());
            return;
        }
        loop {
            if let Ok(reply) = self.try_command(&["PING"]) {
                if reply == "+PONG" || reply.starts_with("-NOAUTH") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the server vanishes mid-run, connections reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs one command on a fresh connection (authenticating first when needed) and returns the
    /// first line of the reply.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|err| panic!("redis command {args:?} failed: {err}"))
    }

    fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        command_on(self.port, self.password.as_deref(), args)
    }

    /// Keys whose name starts with `prefix`.
    pub fn keys(&self, prefix: &str) -> usize {
        let reply = self.command(&[
            "EVAL",
            "return #redis.call('KEYS', ARGV[1])",
            "0",
            &format!("{prefix}*"),
        ]);
        reply.trim_start_matches(':').parse().unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs one command on a fresh connection to the server on `port` (authenticating first with
/// `password`) and returns the first line of the reply, or a bulk string's body.
pub fn command_on(port: u16, password: Option<&str>, args: &[&str]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    if let Some(password) = password {
        stream.write_all(&encode(&["AUTH", password]))?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
    }
    stream.write_all(&encode(args))?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end().to_string();
    // A bulk string: read its body too, and return that.
    if let Some(length) = line.strip_prefix('$') {
        if let Ok(length) = length.parse::<usize>() {
            let mut body = vec![0; length + 2];
            reader.read_exact(&mut body)?;
            return Ok(String::from_utf8_lossy(&body[..length]).into_owned());
        }
    }
    Ok(line)
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}
