//! `vigil verify`: what a subscriber does before it obeys a command.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use vigil::sign::{self, Jwks, VerifyError, COMMAND_TYPE, SET_TYPE};

use crate::keys::{read_jwks, read_lines};
use crate::Failure;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Compact JWS, one per line (native commands or CAEP SETs); `-` or nothing for stdin.
    input: Option<PathBuf>,
    /// The JWK set published with `vigil keys generate`.
    #[arg(long)]
    jwks: PathBuf,
}

/// Prints `line N: ok <payload>` or `line N: error: <why>` per token; exit 1
/// when any fails, so a script can gate on it.
pub fn run(args: VerifyArgs) -> Result<(), Failure> {
    let jwks = read_jwks(&args.jwks)?;
    let lines = read_lines(args.input.as_deref())?;
    let (mut checked, mut failed) = (0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for (number, line) in lines.iter().enumerate() {
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        checked += 1;
        match check(token, &jwks) {
            Ok(payload) => writeln!(out, "line {}: ok {payload}", number + 1)?,
            Err(e) => {
                failed += 1;
                writeln!(out, "line {}: error: {e}", number + 1)?;
            }
        }
    }
    match (checked, failed) {
        (0, _) => Err(Failure::Input("no JWS in the input".into())),
        (_, 0) => Ok(()),
        (checked, failed) => Err(Failure::Check(format!("{failed} of {checked} failed verification"))),
    }
}

/// The verified payload as JSON, told apart by the header's `typ`.
fn check(token: &str, jwks: &Jwks) -> Result<String, VerifyError> {
    match sign::verify_compact(token, jwks)?.typ.as_deref() {
        Some(COMMAND_TYPE) => sign::verify(token, jwks).map(|command| serde_json::to_string(&command).unwrap_or_default()),
        Some(SET_TYPE) => sign::verify_set(token, jwks).map(|claims| claims.to_string()),
        other => Err(VerifyError::Type {
            expected: "vigil-command+jws or secevent+jwt",
            found: other.unwrap_or("(none)").to_string(),
        }),
    }
}
