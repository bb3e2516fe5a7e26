#![no_main]
use libfuzzer_sys::fuzz_target;

// Two SQL texts with one fingerprint must read (to sqlparser) and classify alike: see
// `tidegate_fuzz::fingerprint_diff`.
fuzz_target!(|data: &[u8]| tidegate_fuzz::fuzz_one(data));
