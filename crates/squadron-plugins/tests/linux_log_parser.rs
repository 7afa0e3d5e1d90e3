//! `linux_log_parser` against SQUAD 1.98's output on the fixture logs, on
//! generated logs, and on hostile input.

mod common;

use squadron_plugins::linux_log::{parse_boot_log, LogTest};

fn parse(input: &[u8]) -> Vec<LogTest> {
    parse_boot_log(input).expect("in-memory input reads")
}

macro_rules! fixtures {
    ($($test:ident => $dir:literal / $log:literal,)*) => {$(
        #[test]
        fn $test() {
            common::check_fixture($dir, $log, parse);
        }
    )*};
}

fixtures! {
    different_numbers_in_function_name_oops => "squad/linux_log_parser" / "different-numbers-in-function-name-oops.log",
    duplicated_oops => "squad/linux_log_parser" / "duplicated-oops.log",
    internal_error_oops => "squad/linux_log_parser" / "internal-error-oops.log",
    kasan => "squad/linux_log_parser" / "kasan.log",
    kcsan_full_log => "squad/linux_log_parser" / "kcsan_full_log.log",
    kcsan_simple => "squad/linux_log_parser" / "kcsan_simple.log",
    kernel_bug_and_invalid_opcode => "squad/linux_log_parser" / "kernel_bug_and_invalid_opcode.log",
    kernelexceptiontrace => "squad/linux_log_parser" / "kernelexceptiontrace.log",
    kernelexceptiontrace_without_squarebraces => "squad/linux_log_parser" / "kernelexceptiontrace_without_squarebraces.log",
    kernelpanic_multiline => "squad/linux_log_parser" / "kernelpanic-multiline.log",
    kernelpanic_single_and_multiline => "squad/linux_log_parser" / "kernelpanic-single-and-multiline.log",
    kfence => "squad/linux_log_parser" / "kfence.log",
    multiple_issues_dmesg => "squad/linux_log_parser" / "multiple_issues_dmesg.log",
    oops => "squad/linux_log_parser" / "oops.log",
    rcu_warning => "squad/linux_log_parser" / "rcu_warning.log",
    kfence_seconds => "squad/log_parser_base" / "kfence-seconds.log",
    lava_kernel_1 => "external/lava-kernel-logs" / "kernel-1.txt",
    lava_kernel_2 => "external/lava-kernel-logs" / "kernel-2.txt",
    lava_kernel_bug => "external/lava-kernel-logs" / "kernel-bug.txt",
    lava_kernel_kfence => "external/lava-kernel-logs" / "kernel-kfence.txt",
    lava_kernel_login_error => "external/lava-kernel-logs" / "kernel-login-error.txt",
    lava_kernel_many_errors => "external/lava-kernel-logs" / "kernel-many-errors.txt",
    lava_kernel_oops => "external/lava-kernel-logs" / "kernel-oops.txt",
    lava_kernel_panic_and_reset_overlapped => "external/lava-kernel-logs" / "kernel-panic-and-reset-overlapped.txt",
    lava_kernel_panic => "external/lava-kernel-logs" / "kernel-panic.txt",
}
