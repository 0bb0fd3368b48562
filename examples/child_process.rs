//! The eventfd crosses a process boundary: a child process adds, the parent
//! awaits the counts with `AsyncEventFd`.
//!
//! ```sh
//! cargo run --example child_process
//! ```
//!
//! The child is this same program, started again with
//! `std::env::current_exe()` and a `child ...` argument. Two ways to hand it
//! the fd:
//!
//! **(a) Inheritance across `fork` + `exec`.** Open fds survive `exec` unless
//! they are close-on-exec, and every `EventFd` is close-on-exec by default, so
//! that fds do not leak into programs that were never meant to have them.
//! Here leaking is the point: `EventFd::builder().cloexec(false)` makes an fd
//! the child inherits, and its number goes on the child's command line
//! (`child inherit --fd N`). The child adopts it with `OwnedFd::from_raw_fd`
//! and `EventFd::try_from`, which checks that it really is an eventfd.
//!
//! The risk: while an fd is not close-on-exec, *every* program this process
//! starts, from any thread (another `Command`, a library calling `popen`),
//! inherits it too, keeps the counter alive and can write to it. So the
//! inheritable fd is made right before the spawn, and the parent's copy is
//! made close-on-exec again right after (`FD_CLOEXEC` belongs to one fd in
//! one process, so the child's copy keeps working). In a program with other
//! threads spawning processes, prefer (b).
//!
//! **(b) `SCM_RIGHTS` over a Unix socket.** The eventfd stays close-on-exec.
//! The child gets one end of a socket pair as its stdin (`Command` moves it
//! there, which is the usual way to give a child an fd), and the parent sends
//! the eventfd through it with `sendmsg` and an `SCM_RIGHTS` control message.
//! The kernel installs a new fd in the child, on the same counter; the child
//! adopts it with `EventFd::try_from(OwnedFd)`. The same works between
//! unrelated processes over a named Unix socket.

#![deny(clippy::undocumented_unsafe_blocks)]

use std::env;
use std::error::Error;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_eventfd::{AsyncEventFd, EventFd};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use tokio::time::timeout;

/// Any await that takes longer than this is a lost wakeup (or a stuck
/// child): fail.
const LIMIT: Duration = Duration::from_secs(5);
/// What the child of (a) adds, one `add` each.
const INHERIT_ADDS: [u64; 3] = [10, 20, 30];
/// What the child of (b) adds, one `add` each.
const SCM_ADDS: [u64; 3] = [100, 200, 300];
/// The bytes sent along with the fd (a stream socket needs at least one).
const GREETING: &[u8] = b"eventfd";

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

fn main() -> Res<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => parent(),
        ["child", "inherit", "--fd", fd] => child_inherit(fd.parse()?),
        ["child", "scm"] => child_scm(),
        other => Err(format!("unexpected arguments {other:?}").into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn parent() -> Res<()> {
    println!("parent pid {}", std::process::id());
    inherit().await?;
    scm_rights().await?;
    println!("both children added exactly what the parent expected");
    Ok(())
}

/// (a) Inheritance across fork + exec.
async fn inherit() -> Res<()> {
    // Not close-on-exec, on purpose: the child must inherit it.
    let inheritable = EventFd::builder().cloexec(false).build()?;
    let fd = inheritable.as_raw_fd();
    let child = Command::new(env::current_exe()?)
        .args(["child", "inherit", "--fd", &fd.to_string()])
        .spawn()?;
    // The child has its copy now; close the window in which later spawns
    // (from any thread) would inherit ours.
    fcntl(inheritable.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    println!("(a) spawned child {} with inherited fd {fd}", child.id());

    let efd = AsyncEventFd::try_from(inheritable)?;
    let total = read_until(&efd, INHERIT_ADDS.iter().sum(), "(a)").await?;
    wait_for(child).await?;
    assert_eq!(total, INHERIT_ADDS.iter().sum::<u64>());
    Ok(())
}

/// (b) SCM_RIGHTS over a Unix socket pair.
async fn scm_rights() -> Res<()> {
    // Close-on-exec, as by default: this fd is never inherited.
    let efd = AsyncEventFd::new()?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    let child = Command::new(env::current_exe()?)
        .args(["child", "scm"])
        .stdin(Stdio::from(theirs))
        .spawn()?;
    let fds = [efd.as_raw_fd()];
    let sent = sendmsg::<()>(
        ours.as_raw_fd(),
        &[IoSlice::new(GREETING)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )?;
    assert_eq!(sent, GREETING.len());
    println!(
        "(b) spawned child {}, sent fd {} with SCM_RIGHTS",
        child.id(),
        fds[0]
    );

    let total = read_until(&efd, SCM_ADDS.iter().sum(), "(b)").await?;
    wait_for(child).await?;
    assert_eq!(total, SCM_ADDS.iter().sum::<u64>());
    Ok(())
}

/// Reads until `expected` has arrived; the child's adds may coalesce.
async fn read_until(efd: &AsyncEventFd, expected: u64, part: &str) -> Res<u64> {
    let mut total = 0;
    while total < expected {
        let value = timeout(LIMIT, efd.read()).await??;
        total += value;
        println!("{part} parent read {value} (total {total}/{expected})");
    }
    Ok(total)
}

async fn wait_for(mut child: Child) -> Res<()> {
    let pid = child.id();
    let status = timeout(LIMIT, tokio::task::spawn_blocking(move || child.wait())).await???;
    assert!(status.success(), "child {pid} failed: {status}");
    Ok(())
}

/// The child of (a): adopts the inherited fd by its number.
fn child_inherit(fd: RawFd) -> Res<()> {
    // SAFETY: the parent left fd `fd` open across exec for this process to
    // own, and passed its number; nothing else here uses or closes it. If the
    // number were wrong, `try_from` below refuses anything but an eventfd.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let efd = EventFd::try_from(owned)?;
    add_all(&efd, &INHERIT_ADDS, "(a)")
}

/// The child of (b): receives the fd over the socket on its stdin.
fn child_scm() -> Res<()> {
    let stdin = io::stdin();
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(RawFd);
    // MSG_CMSG_CLOEXEC: the received fd is close-on-exec from the start.
    let msg = recvmsg::<()>(
        stdin.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut received = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel installed `fd` in this process for this
                // message; it is open and nothing else owns it.
                received = Some(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let bytes = msg.bytes;
    if &buf[..bytes] != GREETING {
        return Err(format!("unexpected message {:?}", &buf[..bytes]).into());
    }
    let owned = received.ok_or("no fd in the message")?;
    let efd = EventFd::try_from(owned)?;
    add_all(&efd, &SCM_ADDS, "(b)")
}

fn add_all(efd: &EventFd, values: &[u64], part: &str) -> Res<()> {
    let pid = std::process::id();
    println!("{part} child {pid} adopted fd {}", efd.as_raw_fd());
    for &value in values {
        println!("{part} child {pid} adds {value}");
        efd.add(value)?;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
