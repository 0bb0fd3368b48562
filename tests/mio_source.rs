//! `impl mio::event::Source for EventFd`: registration, edge-triggered
//! re-arming, reregistration and deregistration in a mio `Poll`.

#![cfg(feature = "mio")]

mod util;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use async_eventfd::{EventFd, MAX_COUNT};
use mio::{Events, Interest, Poll, Token};

/// What one `poll` reported: `(token, readable, writable)` per event.
type Seen = Vec<(Token, bool, bool)>;

/// Polls until at least one event arrives (failing after [`util::LIMIT`], or
/// if it only arrives at the limit).
#[track_caller]
fn poll_some(poll: &mut Poll) -> Seen {
    let mut events = Events::with_capacity(16);
    let start = Instant::now();
    loop {
        let left = util::LIMIT.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "no event within {:?}", util::LIMIT);
        poll.poll(&mut events, Some(left)).expect("poll");
        if !events.is_empty() {
            assert!(
                start.elapsed() < util::LIMIT.mul_f64(0.9),
                "the event only came at the deadline"
            );
            return events
                .iter()
                .map(|e| (e.token(), e.is_readable(), e.is_writable()))
                .collect();
        }
    }
}

/// Polls without waiting: what is pending right now.
fn poll_now(poll: &mut Poll) -> Seen {
    let mut events = Events::with_capacity(16);
    poll.poll(&mut events, Some(Duration::ZERO)).expect("poll");
    events
        .iter()
        .map(|e| (e.token(), e.is_readable(), e.is_writable()))
        .collect()
}

fn setup(interest: Interest, token: Token) -> (Poll, EventFd) {
    let poll = Poll::new().expect("Poll::new");
    let mut efd = EventFd::new().expect("EventFd::new");
    poll.registry()
        .register(&mut efd, token, interest)
        .expect("register");
    (poll, efd)
}

#[test]
fn empty_registered_eventfd_reports_nothing() {
    let (mut poll, _efd) = setup(Interest::READABLE, Token(1));
    assert_eq!(poll_now(&mut poll), vec![]);
}

#[test]
fn add_gives_a_readable_event_with_the_token() {
    let (mut poll, efd) = setup(Interest::READABLE, Token(7));
    efd.add(3).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(7), true, false)]);
    assert_eq!(efd.read().expect("read"), 3);
}

#[test]
fn add_from_another_thread_wakes_a_waiting_poll() {
    let (mut poll, efd) = setup(Interest::READABLE, Token(2));
    let writer = efd.try_clone().expect("try_clone");
    let handle = std::thread::spawn(move || writer.add(5));
    assert_eq!(poll_some(&mut poll), vec![(Token(2), true, false)]);
    handle.join().expect("writer").expect("add");
    assert_eq!(efd.read().expect("read"), 5);
}

#[test]
fn registering_an_already_readable_eventfd_reports_it() {
    let mut poll = Poll::new().expect("Poll::new");
    let mut efd = EventFd::builder().initial(1).build().expect("build");
    poll.registry()
        .register(&mut efd, Token(3), Interest::READABLE)
        .expect("register");
    assert_eq!(poll_some(&mut poll), vec![(Token(3), true, false)]);
}

#[test]
fn event_is_edge_triggered_and_not_repeated_without_a_new_add() {
    let (mut poll, efd) = setup(Interest::READABLE, Token(1));
    efd.add(1).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(1), true, false)]);
    // Not drained, but no new edge: nothing more.
    assert_eq!(poll_now(&mut poll), vec![]);
    assert_eq!(efd.read().expect("read"), 1);
}

#[test]
fn new_add_after_draining_rearms_the_event() {
    let (mut poll, efd) = setup(Interest::READABLE, Token(4));
    for round in 1..=5u64 {
        efd.add(round).expect("add");
        assert_eq!(
            poll_some(&mut poll),
            vec![(Token(4), true, false)],
            "round {round}"
        );
        assert_eq!(efd.read().expect("read"), round);
        assert_eq!(
            efd.read().expect_err("drained").kind(),
            ErrorKind::WouldBlock
        );
        assert_eq!(
            poll_now(&mut poll),
            vec![],
            "round {round}: nothing after draining"
        );
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "Miri's eventfd has no EFD_SEMAPHORE (docs/miri-notes.md)"
)]
fn semaphore_mode_drains_one_unit_per_read() {
    let mut poll = Poll::new().expect("Poll::new");
    let mut efd = EventFd::builder().semaphore(true).build().expect("build");
    poll.registry()
        .register(&mut efd, Token(5), Interest::READABLE)
        .expect("register");
    efd.add(3).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(5), true, false)]);
    for _ in 0..3 {
        assert_eq!(efd.read().expect("read"), 1);
    }
    assert_eq!(
        efd.read().expect_err("drained").kind(),
        ErrorKind::WouldBlock
    );
    efd.add(1).expect("add again");
    assert_eq!(poll_some(&mut poll), vec![(Token(5), true, false)]);
}

#[test]
fn reregister_changes_the_token() {
    let (mut poll, mut efd) = setup(Interest::READABLE, Token(1));
    poll.registry()
        .reregister(&mut efd, Token(9), Interest::READABLE)
        .expect("reregister");
    efd.add(1).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(9), true, false)]);
}

#[test]
fn reregister_changes_the_interest_to_writable() {
    let (mut poll, mut efd) = setup(Interest::READABLE, Token(1));
    efd.add(1).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(1), true, false)]);
    poll.registry()
        .reregister(&mut efd, Token(2), Interest::WRITABLE)
        .expect("reregister");
    // Room for more: writable, and no longer reported readable.
    assert_eq!(poll_some(&mut poll), vec![(Token(2), false, true)]);
    efd.add(1).expect("add");
    let seen = poll_now(&mut poll);
    assert!(seen.iter().all(|&(_, readable, _)| !readable), "{seen:?}");
}

#[test]
fn writable_interest_reports_room_and_rearms_after_a_read_of_a_full_counter() {
    let (mut poll, efd) = setup(Interest::WRITABLE, Token(6));
    assert_eq!(poll_some(&mut poll), vec![(Token(6), false, true)]);
    efd.add(MAX_COUNT).expect("fill");
    // Full: after any event for the add itself, nothing says writable.
    let seen = poll_now(&mut poll);
    assert!(
        seen.iter().all(|&(_, _, writable)| !writable),
        "full counter reported writable: {seen:?}"
    );
    assert_eq!(poll_now(&mut poll), vec![]);
    assert_eq!(efd.read().expect("read makes room"), MAX_COUNT);
    assert_eq!(poll_some(&mut poll), vec![(Token(6), false, true)]);
}

#[test]
fn readable_and_writable_interest_reports_both() {
    let (mut poll, efd) = setup(Interest::READABLE | Interest::WRITABLE, Token(8));
    efd.add(1).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(8), true, true)]);
}

#[test]
fn no_events_after_deregister() {
    let (mut poll, mut efd) = setup(Interest::READABLE, Token(1));
    poll.registry().deregister(&mut efd).expect("deregister");
    efd.add(1).expect("add");
    assert_eq!(poll_now(&mut poll), vec![]);
    // The fd itself is untouched.
    assert_eq!(efd.read().expect("read"), 1);
}

#[test]
fn deregistered_eventfd_can_be_registered_again() {
    let (mut poll, mut efd) = setup(Interest::READABLE, Token(1));
    poll.registry().deregister(&mut efd).expect("deregister");
    poll.registry()
        .register(&mut efd, Token(10), Interest::READABLE)
        .expect("register again");
    efd.add(2).expect("add");
    assert_eq!(poll_some(&mut poll), vec![(Token(10), true, false)]);
}

#[test]
fn registering_twice_is_already_exists() {
    let (poll, mut efd) = setup(Interest::READABLE, Token(1));
    let err = poll
        .registry()
        .register(&mut efd, Token(2), Interest::READABLE)
        .expect_err("second register");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
}

#[test]
fn reregister_or_deregister_of_an_unregistered_eventfd_is_not_found() {
    let poll = Poll::new().expect("Poll::new");
    let mut efd = EventFd::new().expect("EventFd::new");
    let err = poll
        .registry()
        .reregister(&mut efd, Token(1), Interest::READABLE)
        .expect_err("reregister");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let err = poll
        .registry()
        .deregister(&mut efd)
        .expect_err("deregister");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[test]
fn clone_registered_separately_reports_its_own_token() {
    let (mut poll, efd) = setup(Interest::READABLE, Token(1));
    let mut clone = efd.try_clone().expect("try_clone");
    poll.registry()
        .register(&mut clone, Token(2), Interest::READABLE)
        .expect("register the clone");
    efd.add(1).expect("add");
    let mut seen = poll_some(&mut poll);
    // Both entries fire for the same counter; they may come in one poll or two.
    if seen.len() == 1 {
        seen.extend(poll_some(&mut poll));
    }
    seen.sort_by_key(|&(token, _, _)| token);
    assert_eq!(seen, vec![(Token(1), true, false), (Token(2), true, false)]);
}

#[test]
fn two_eventfds_in_one_poll_are_told_apart() {
    let mut poll = Poll::new().expect("Poll::new");
    let mut a = EventFd::new().expect("a");
    let mut b = EventFd::new().expect("b");
    poll.registry()
        .register(&mut a, Token(100), Interest::READABLE)
        .expect("register a");
    poll.registry()
        .register(&mut b, Token(200), Interest::READABLE)
        .expect("register b");
    b.add(1).expect("add b");
    assert_eq!(poll_some(&mut poll), vec![(Token(200), true, false)]);
    a.add(1).expect("add a");
    assert_eq!(poll_some(&mut poll), vec![(Token(100), true, false)]);
}
