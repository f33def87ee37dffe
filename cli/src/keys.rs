//! `vigil keys`: make the engine's signing key and sign commands with it.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use vigil::sign::{Jwks, KeyRing};
use vigil::verdict::ControlCommand;

use crate::Failure;

/// The file names `keys generate` writes.
pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
pub const JWKS_FILE: &str = "jwks.json";

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new Ed25519 signing key (PKCS#8 PEM, mode 0600) and the JWK set subscribers verify with.
    Generate(GenerateArgs),
    /// Sign control commands (JSON Lines, e.g. `control.jsonl`) as one compact JWS per line.
    Sign(SignArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Folder for `signing-key.pem` and `jwks.json`; an existing key there is never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// A JWK set published before: its keys stay in the new `jwks.json`, so
    /// commands signed before the rotation keep verifying.
    #[arg(long, value_name = "JWKS")]
    keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Control commands, one JSON object per line; `-` or nothing for stdin.
    input: Option<PathBuf>,
    /// The PKCS#8 PEM signing key.
    #[arg(long)]
    key: PathBuf,
    /// Sign the CAEP Security Event Token form instead of the native command.
    #[arg(long, requires_all = ["issuer", "audience"])]
    caep: bool,
    /// `iss` of the SETs: the engine's identifier as subscribers know it.
    #[arg(long)]
    issuer: Option<String>,
    /// `aud` of the SETs: the subscriber.
    #[arg(long)]
    audience: Option<String>,
}

pub fn run(command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Generate(args) => generate(&args),
        KeysCommand::Sign(args) => sign(&args),
    }
}

fn generate(args: &GenerateArgs) -> Result<(), Failure> {
    let mut keys = KeyRing::generate();
    if let Some(path) = &args.keep {
        keys.keep_previous(&read_jwks(path)?);
    }
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::Input(format!("cannot create `{}`: {e}", args.out.display())))?;
    let key_path = args.out.join(SIGNING_KEY_FILE);
    let pem = keys.to_pkcs8_pem()?;
    write_secret(&key_path, pem.as_bytes())?;
    let jwks_path = args.out.join(JWKS_FILE);
    std::fs::write(&jwks_path, keys.jwks().to_json() + "\n")
        .map_err(|e| Failure::Input(format!("cannot write `{}`: {e}", jwks_path.display())))?;
    println!("key `{}`: {} (secret), {} (publish)", keys.kid(), key_path.display(), jwks_path.display());
    Ok(())
}

/// Creates `path` readable by its owner only, refusing to replace a key
/// that may still be in use.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::Input(format!("`{}` exists; a signing key is never overwritten", path.display()))
        } else {
            Failure::Input(format!("cannot create `{}`: {e}", path.display()))
        }
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| Failure::Input(format!("cannot write `{}`: {e}", path.display())))
}

pub fn read_jwks(path: &Path) -> Result<Jwks, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::Input(format!("cannot read `{}`: {e}", path.display())))?;
    Jwks::from_json(&text).map_err(|e| Failure::Input(format!("`{}`: {e}", path.display())))
}

/// The lines of `input`, a file or stdin (`-` or none).
pub fn read_lines(input: Option<&Path>) -> Result<Vec<String>, Failure> {
    let unreadable = |name: &str, e: std::io::Error| Failure::Input(format!("cannot read `{name}`: {e}"));
    match input {
        None => std::io::stdin().lock().lines().collect::<Result<_, _>>().map_err(|e| unreadable("stdin", e)),
        Some(path) if path == Path::new("-") => {
            std::io::stdin().lock().lines().collect::<Result<_, _>>().map_err(|e| unreadable("stdin", e))
        }
        Some(path) => std::fs::read_to_string(path)
            .map(|text| text.lines().map(str::to_string).collect())
            .map_err(|e| unreadable(&path.display().to_string(), e)),
    }
}

fn sign(args: &SignArgs) -> Result<(), Failure> {
    let keys = KeyRing::load(&args.key)?;
    let mut out = std::io::stdout().lock();
    for (number, line) in read_lines(args.input.as_deref())?.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let command: ControlCommand = serde_json::from_str(line)
            .map_err(|e| Failure::Input(format!("line {}: not a control command: {e}", number + 1)))?;
        let jws = match (&args.issuer, &args.audience) {
            (Some(issuer), Some(audience)) if args.caep => vigil::caep::sign(&keys, &command, issuer, audience)?,
            _ => keys.sign(&command),
        };
        writeln!(out, "{jws}")?;
    }
    Ok(())
}
