//! The command line parses as documented; bad arguments are usage errors.

use clap::error::ErrorKind;

use super::*;

/// Parses `args`, space-separated, after the program name.
fn parse(args: &str) -> Result<Command, clap::Error> {
    let argv = std::iter::once("eventfd-bench").chain(args.split_whitespace());
    try_parse_from(argv).map(|cli| cli.command.expect("a subcommand"))
}

/// The options of `$args`, which must parse as the subcommand `$variant`.
macro_rules! parsed {
    ($variant:ident, $args:expr) => {
        match parse($args) {
            Ok(Command::$variant(o)) => o,
            other => panic!("{}: {other:?}", $args),
        }
    };
}

/// Each case is `ARGS => MESSAGE`: `ARGS` must be a usage error (status 2)
/// whose message contains `MESSAGE`.
fn usage_errors(cases: &[&str]) {
    for case in cases {
        let (args, needle) = case.split_once(" => ").expect("ARGS => MESSAGE");
        let e = parse(args).expect_err("a bad argument");
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn no_command_is_the_tour() {
    let cli = try_parse_from(["eventfd-bench"]).expect("no arguments");
    assert!(cli.command.is_none());
}

#[test]
fn rounds_and_rts_default_per_subcommand_unless_given() {
    let o = parsed!(Scale, "scale");
    assert_eq!((o.rounds, o.rts, o.warmup), (5, 5_000, 1_000));
    assert_eq!(o.pick, Pick::Random);
    assert_eq!(o.fds, [1, 100, 1_000, 10_000]);
    let o = parsed!(Latency, "latency");
    assert_eq!((o.rounds, o.rts), (7, 10_000));
    assert_eq!(o.common.pin, Pin::Same);
    assert_eq!(o.common.flavors(), [Flavor::Ct, Flavor::Mt]);
    assert_eq!(o.common.contenders(), Contender::ALL);
    let o = parsed!(Throughput, "throughput");
    assert_eq!((o.rounds, o.duration), (3, Duration::from_millis(200)));
    assert_eq!(o.writers, [1, 2, 4]);
    let o = parsed!(
        Scale,
        "scale --rounds 9 --rts=20_000 --pick first --fds 10,20"
    );
    assert_eq!((o.rounds, o.rts), (9, 20_000));
    assert_eq!(o.pick, Pick::First);
    assert_eq!(o.fds, [10, 20]);
}

#[test]
fn impl_list_always_includes_the_crate_first() {
    let o = parsed!(ThreadTask, "thread-task --impl notify,asyncfd-r");
    assert_eq!(
        o.common.contenders(),
        [Contender::Crate, Contender::Notify, Contender::AsyncFdR]
    );
    let args = "latency --impl=tokio-eventfd,async-eventfd --flavor mt --syscalls --json";
    let o = parsed!(Latency, args);
    assert_eq!(
        o.common.contenders(),
        [Contender::TokioEventfd, Contender::Crate]
    );
    assert_eq!(o.common.flavors(), [Flavor::Mt]);
    assert!(o.syscalls && o.common.json);
}

#[test]
fn kernel_options_parse_with_their_defaults() {
    let o = parsed!(Kernel, "kernel");
    assert_eq!(
        (o.rounds, o.rts, o.warmup, o.rings),
        (5, 5_000, 500, 100_000)
    );
    assert_eq!(o.rig, [Rig::Uring, Rig::Kvm]);
    assert_eq!(o.common.flavors(), [Flavor::Ct, Flavor::Mt]);
    assert_eq!(
        o.common
            .clone()
            .or_contenders(&Contender::KERNEL)
            .contenders(),
        Contender::KERNEL
    );
    let args =
        "kernel --rig=kvm --rings 1_000 --rts=20 --rounds 2 --impl asyncfd-r --flavor mt --json";
    let o = parsed!(Kernel, args);
    assert_eq!(o.rig, [Rig::Kvm]);
    assert_eq!((o.rounds, o.rts, o.rings), (2, 20, 1_000));
    assert_eq!(
        o.common
            .clone()
            .or_contenders(&Contender::KERNEL)
            .contenders(),
        [Contender::Crate, Contender::AsyncFdR]
    );
    assert_eq!(o.common.flavors(), [Flavor::Mt]);
    assert!(o.common.json);
    usage_errors(&[
        "kernel --rings 4294967296 => expected at most 4294967295",
        "kernel --rig aio => invalid value 'aio' for '--rig <RIG,...>'",
        "kernel --writers 2 => unexpected argument '--writers'",
    ]);
}

#[test]
fn thread_task_rows_default_to_both_writers_of_the_crate() {
    let o = parsed!(ThreadTask, "thread-task");
    assert_eq!(
        o.common.or_contenders(&Contender::THREAD_TASK).contenders(),
        Contender::THREAD_TASK
    );
    let (shape, row) = parsed!(Latency, "latency --one thread-notifier")
        .one
        .expect("--one");
    assert_eq!(
        (shape.command, row),
        ("thread-task", Row::Task(Contender::Notifier, Flavor::Ct))
    );
}

#[test]
fn impl_values_are_the_table_names() {
    for imp in Contender::THREAD_TASK {
        let value = imp.to_possible_value().expect("not skipped");
        assert_eq!(value.get_name(), imp.name());
    }
}

#[test]
fn the_hidden_one_option_takes_a_subject_key() {
    let (shape, row) = parsed!(Latency, "latency --one thread-asyncfd-rw")
        .one
        .expect("--one");
    assert_eq!(
        (shape.command, row),
        ("thread-task", Row::Task(Contender::AsyncFdRw, Flavor::Ct))
    );
    usage_errors(&["latency --one bogus => unknown subject \"bogus\""]);
}

#[test]
fn bad_values_are_usage_errors() {
    usage_errors(&[
        "scale --pick last => invalid value 'last' for '--pick <WHICH>'",
        "latency --rounds 0 => '--rounds <N>': expected a positive integer",
        "scale --fds 10,x => invalid value 'x' for '--fds <N,...>'",
        "latency --rts => a value is required for '--rts <N>'",
        "latency --writers 2 => unexpected argument '--writers'",
        "bogus => unrecognized subcommand 'bogus'",
    ]);
}

#[test]
fn help_exits_zero_and_names_every_scenario() {
    let e = parse("stress --help").expect_err("help is an early exit");
    assert_eq!((e.kind(), e.exit_code()), (ErrorKind::DisplayHelp, 0));
    let help = e.to_string();
    for s in &SCENARIOS {
        assert!(help.contains(s.name), "{} missing from stress --help", s.id);
    }
    assert!(help.contains("--seed <N>"), "{help}");
}

#[test]
fn durations_parse_with_units() {
    assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1_500)));
    assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
    assert_eq!(
        duration("0s"),
        Err("invalid duration \"0s\" (must be positive)".to_string())
    );
    assert_eq!(
        duration("5x"),
        Err("invalid duration unit in \"5x\" (use ms, s, m or h)".to_string())
    );
}

#[test]
fn stress_arguments_parse_and_bad_ones_are_errors() {
    usage_errors(&[
        "stress --scenario S99 => unknown scenario \"S99\" (expected S1 to S",
        "stress --threads => a value is required for '--threads <N>'",
        "stress --threads 1025 => 1025 is not in 1..=1024",
        "stress --bogus => unexpected argument '--bogus'",
        "stress --duration 5x => invalid duration unit in \"5x\"",
    ]);
    let args = "stress --scenario=s3,S5 --scenario 3 --threads 8 --seed 42 --duration 1.5s \
                --sample-every 5s --json";
    let o = parsed!(Stress, args);
    let ids: Vec<&str> = o.selected().iter().map(|s| s.id).collect();
    assert_eq!(ids, ["S3", "S5"]);
    assert_eq!((o.threads, o.seed), (Some(8), Some(42)));
    assert_eq!(o.duration, Some(Duration::from_millis(1_500)));
    assert_eq!(o.sample_every, Duration::from_secs(5));
    assert!(o.json);
    let o = parsed!(Stress, "stress");
    assert_eq!(o.selected().len(), SCENARIOS.len());
    assert_eq!((o.duration, o.scale, o.seed), (None, None, None));
    assert_eq!(o.sample_every, Duration::from_secs(60));
}
