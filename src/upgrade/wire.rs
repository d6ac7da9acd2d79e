//! The hand-off channel between the serving process and the new binary: a
//! unix `SOCK_SEQPACKET` socket (each message arrives whole and alone), its
//! messages (JSON), and listening sockets riding along as `SCM_RIGHTS`.
//! Calls block, bounded by receive timeouts; callers keep them off the
//! async runtimes. Knows nothing of listeners or configuration.
//!
//! The one `unsafe` of the upgrade lives here ([`own`]): a descriptor the
//! kernel has just installed (by `accept4` or with a received message) is
//! taken into an [`OwnedFd`], which nix 0.30 leaves to the caller.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr, sockopt,
};
use nix::sys::time::TimeVal;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version of the messages below: a new binary that speaks another
/// one refuses the hand-off (and the old process keeps serving).
pub(crate) const PROTOCOL: u32 = 1;

/// Messages are a few hundred bytes; anything longer is refused.
const MAX_MESSAGE: usize = 16 * 1024;

/// Descriptors a message may carry (one is sent; room for more keeps a
/// stray one from truncating the control data, which would leak them).
const MAX_FDS: usize = 4;

/// What a passed socket was in the old process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain HTTP listener.
    Http,
    /// A `[[server.tls]]` listener.
    Https,
    /// The admin listener.
    Admin,
}

impl Kind {
    /// The scheme shown in logs.
    pub fn scheme(self) -> &'static str {
        match self {
            Kind::Http | Kind::Admin => "http",
            Kind::Https => "https",
        }
    }
}

/// From the serving process to the new one, in this order: `Hello`, one
/// `Socket` per listening socket (with it as `SCM_RIGHTS`), `End`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub(crate) enum ToNew {
    /// The protocol the old process speaks.
    Hello {
        /// [`PROTOCOL`] of the sender.
        protocol: u32,
        /// The sender's pid (for the new process's log).
        pid: u32,
    },
    /// The socket riding with this message.
    Socket {
        /// What it was.
        kind: Kind,
        /// Its configured address (port 0 included), by which the new
        /// configuration's listeners find it.
        key: SocketAddr,
    },
    /// Every socket was sent.
    End,
}

/// From the new process to the serving one: one message, then the new
/// process closes its end.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub(crate) enum ToOld {
    /// Serving: the listeners are adopted, the worker pools ready.
    Ready {
        /// The new process's pid.
        pid: u32,
    },
    /// The new process could not start and is exiting.
    Failed {
        /// Why, as it logs it (a config error with file:line:column).
        error: String,
    },
}

/// The listening end, bound in a private directory of the old process.
pub(crate) struct Listener {
    fd: OwnedFd,
}

/// One connected end.
pub(crate) struct Channel {
    fd: OwnedFd,
}

impl Listener {
    /// Binds and listens on `path` (which must not exist).
    pub(crate) fn bind(path: &Path) -> io::Result<Listener> {
        let fd = sock::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        sock::bind(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        sock::listen(&fd, Backlog::new(1)?)?;
        Ok(Listener { fd })
    }

    /// Waits up to `wait` for a connection; `None` when none came.
    pub(crate) fn accept(&self, wait: Duration) -> io::Result<Option<Channel>> {
        // SO_RCVTIMEO bounds accept(2) too.
        sock::setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeval(wait))?;
        match sock::accept4(self.fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(raw) => Ok(Some(Channel { fd: own(raw) })),
            Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Channel {
    /// Connects to the listener at `path`.
    pub(crate) fn connect(path: &Path) -> io::Result<Channel> {
        let fd = sock::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        sock::connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(Channel { fd })
    }

    /// The pid of the process at the other end (as of its connect).
    pub(crate) fn peer_pid(&self) -> io::Result<i32> {
        Ok(sock::getsockopt(&self.fd, sockopt::PeerCredentials)?.pid())
    }

    /// Sends `msg`, with `fd` as `SCM_RIGHTS` if given.
    pub(crate) fn send<T: Serialize>(&self, msg: &T, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let fds: Vec<RawFd> = fd.iter().map(AsRawFd::as_raw_fd).collect();
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
        let sent = sock::sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        if sent != bytes.len() {
            return Err(io::Error::other("a hand-off message was cut short"));
        }
        Ok(())
    }

    /// Waits up to `wait` for a message: `None` when none came, an
    /// `UnexpectedEof` error once the other end closed. Descriptors that
    /// came with it are returned close-on-exec.
    pub(crate) fn recv<T: DeserializeOwned>(
        &self,
        wait: Duration,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        sock::setsockopt(&self.fd, sockopt::ReceiveTimeout, &timeval(wait))?;
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let (bytes, flags, fds) = {
            let msg = match sock::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EAGAIN | Errno::EINTR) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    fds.extend(raw.into_iter().map(own));
                }
            }
            (msg.bytes, msg.flags, fds)
        };
        if bytes == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if flags.contains(MsgFlags::MSG_TRUNC) {
            return Err(io::Error::other("a hand-off message was too long"));
        }
        let msg = serde_json::from_slice(&buf[..bytes])
            .map_err(|e| io::Error::other(format!("a hand-off message is not understood: {e}")))?;
        Ok(Some((msg, fds)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn timeval(wait: Duration) -> TimeVal {
    // A zero timeout means "block for ever" to SO_RCVTIMEO.
    let wait = wait.max(Duration::from_millis(1));
    TimeVal::new(
        i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        i64::from(wait.subsec_micros()),
    )
}

/// Takes ownership of a descriptor the kernel has just given this process.
#[allow(unsafe_code)]
fn own(raw: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `raw` was just returned by accept4(2) or installed by
    // recvmsg(2) from SCM_RIGHTS: an open descriptor that nothing else in
    // this process knows of, so it has exactly one owner from here on.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_travels_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.sock");
        let listener = Listener::bind(&path).unwrap();
        assert!(
            listener
                .accept(Duration::from_millis(20))
                .unwrap()
                .is_none()
        );
        let new = Channel::connect(&path).unwrap();
        let old = listener.accept(Duration::from_secs(2)).unwrap().unwrap();
        assert_eq!(old.peer_pid().unwrap(), std::process::id() as i32);

        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        old.send(
            &ToNew::Socket {
                kind: Kind::Http,
                key: addr,
            },
            Some(tcp.as_fd()),
        )
        .unwrap();
        old.send(&ToNew::End, None).unwrap();
        drop(tcp);

        let (msg, fds) = new.recv::<ToNew>(Duration::from_secs(2)).unwrap().unwrap();
        assert!(matches!(msg, ToNew::Socket { kind: Kind::Http, key } if key == addr));
        let [fd]: [OwnedFd; 1] = fds.try_into().unwrap();
        let received = std::net::TcpListener::from(fd);
        // The same listening socket: it still accepts on the address.
        assert_eq!(received.local_addr().unwrap(), addr);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(received.accept().is_ok());

        let (end, none) = new.recv::<ToNew>(Duration::from_secs(2)).unwrap().unwrap();
        assert!(matches!(end, ToNew::End) && none.is_empty());
        assert!(
            new.recv::<ToNew>(Duration::from_millis(20))
                .unwrap()
                .is_none()
        );
        drop(old);
        let eof = new.recv::<ToNew>(Duration::from_secs(2)).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }
}
