//! The `fingerprint_diff` check without libFuzzer: random statements from SQL pieces, paired
//! with constant swaps and byte mutations of themselves (and with other random statements).
//!
//! cargo run --release --example fingerprint_diff_random -- [cases] [seed]
use std::time::Instant;
use tidegate_fuzz::{fingerprint_diff, mutate, random_sql, swap_constants, Outcome, Rng};

fn main() {
    let mut args = std::env::args().skip(1);
    let cases: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let (mut distinct, mut untokenizable, mut agree, mut failures) = (0u64, 0u64, 0u64, 0u64);
    let started = Instant::now();
    for case in 0..cases {
        let a = random_sql(&mut rng);
        let b = match rng.below(4) {
            0 | 1 => swap_constants(&a, &mut rng),
            2 => mutate(&a, &mut rng),
            _ => swap_constants(&mutate(&a, &mut rng), &mut rng),
        };
        match fingerprint_diff(&a, &b) {
            Ok(Outcome::Distinct) => distinct += 1,
            Ok(Outcome::Untokenizable) => untokenizable += 1,
            Ok(Outcome::Agree) => agree += 1,
            Err(e) => {
                failures += 1;
                if failures <= 20 {
                    println!("case {case}: {e}");
                }
            }
        }
    }
    println!(
        "{cases} cases (seed {seed}) in {:.1?}: {agree} same-fingerprint pairs agree, \
         {untokenizable} same-fingerprint pairs sqlparser rejects, {distinct} distinct, \
         {failures} failures",
        started.elapsed()
    );
    if failures > 0 {
        std::process::exit(1);
    }
}
