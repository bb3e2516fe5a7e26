#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidegate::fuzzing::SessionHarness;

static HARNESS: OnceLock<SessionHarness> = OnceLock::new();

fuzz_target!(|data: &[u8]| HARNESS.get_or_init(SessionHarness::new).run(data));
