//! How long the hostile-input property tests (our fuzzing, with proptest)
//! run: each test has a case count small enough for CI, and
//! `LEDGERBRIDGE_FUZZ_SCALE=N` multiplies every one of them by N for the
//! documented long runs (`scripts/fuzz-long`). Reading one environment
//! variable is all this does.

/// The environment variable that multiplies every hostile-input test's
/// case count.
pub const SCALE_VAR: &str = "LEDGERBRIDGE_FUZZ_SCALE";

/// `ci_cases` times `LEDGERBRIDGE_FUZZ_SCALE` (1 when unset or not a
/// positive number).
pub fn cases(ci_cases: u32) -> u32 {
    let scale = std::env::var(SCALE_VAR)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|scale| *scale > 0)
        .unwrap_or(1);
    ci_cases.saturating_mul(scale)
}
