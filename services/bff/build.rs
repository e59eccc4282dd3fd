//! Embeds the pages (`web/`) and the decision records (`docs/adr/`) into the BFF.
//!
//! Hashes are computed here, at build time, rather than at start-up: the bytes are fixed when
//! the binary is linked, so hashing them once per build costs nothing at run time and lets the
//! table be plain `static`s. Each asset is served as `/assets/<name>.<hash>.<ext>`; since the
//! modules import each other by relative name, a module's imports are rewritten to the hashed
//! names of what it imports *before* it is hashed itself (dependencies first), so a change in
//! any module changes the name of every module that reaches it. Each page (`index.html` for
//! `/`, `chaos.html` for `/chaos`) refers to `/assets/<name>.<ext>` and is rewritten to the
//! hashed names the same way.
//!
//! The ADRs become one JSON asset (`adr.json`): number, title, status, date, the first
//! sentence of the decision, and the whole text for the page to expand.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The HTML pages: (file under `web/`, the constant it becomes, the path it is served at).
const PAGES: &[(&str, &str, &str)] = &[
    ("index.html", "INDEX_HTML", "/"),
    ("chaos.html", "CHAOS_HTML", "/chaos"),
];

/// Hex digits of the SHA-256 kept in a name: 40 bits, ample to tell versions of one file apart.
const HASH_LEN: usize = 10;

/// One source asset, before rewriting.
struct Source {
    /// `lab.css`, `app.js`: the name pages and modules refer to.
    name: String,
    bytes: Vec<u8>,
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let web = root.join("web");
    let adr = root.join("docs/adr");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let pages = PAGES.iter().map(|(file, _, _)| web.join(file));
    for watched in pages.chain([web.join("js"), web.join("css"), adr.clone()]) {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for dir in ["js", "css"] {
        for path in files(&web.join(dir)) {
            let name = file_name(&path);
            let bytes = std::fs::read(&path).expect("read a web asset");
            let previous = sources.insert(name.clone(), Source { name, bytes });
            assert!(
                previous.is_none(),
                "two web assets share the name {}",
                path.display()
            );
        }
    }
    sources.insert(
        "adr.json".to_owned(),
        Source {
            name: "adr.json".to_owned(),
            bytes: adr_json(&adr).into_bytes(),
        },
    );

    let mut hashed: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let names: Vec<String> = sources.keys().cloned().collect();
    for name in &names {
        resolve(name, &sources, &mut hashed, &mut Vec::new());
    }

    let mut table = String::new();
    for (file, constant, served) in PAGES {
        let html = std::fs::read_to_string(web.join(file)).expect("read a page under web/");
        let html = rewrite(&html, "/assets/", &hashed);
        let path = out.join(file);
        std::fs::write(&path, html).expect("write a page");
        writeln!(table, "/// `{served}`, with hashed asset names.").ok();
        writeln!(
            table,
            "pub static {constant}: &[u8] = include_bytes!({path:?});"
        )
        .ok();
    }
    writeln!(
        table,
        "/// Every asset by its hashed name: (name, content type, bytes)."
    )
    .ok();
    writeln!(table, "pub static ASSETS: &[(&str, &str, &[u8])] = &[").ok();
    for (served, bytes) in hashed.values() {
        let path = out.join(served);
        std::fs::write(&path, bytes).expect("write an asset");
        writeln!(
            table,
            "    ({served:?}, {:?}, include_bytes!({path:?})),",
            content_type(served)
        )
        .ok();
    }
    writeln!(table, "];").ok();
    std::fs::write(out.join("assets.rs"), table).expect("write assets.rs");
}

/// Rewrites `name`'s references to other assets to their hashed names (resolving them first),
/// then hashes it.
fn resolve(
    name: &str,
    sources: &BTreeMap<String, Source>,
    hashed: &mut BTreeMap<String, (String, Vec<u8>)>,
    visiting: &mut Vec<String>,
) {
    if hashed.contains_key(name) {
        return;
    }
    assert!(
        !visiting.iter().any(|v| v == name),
        "web modules import each other in a cycle: {visiting:?} -> {name}"
    );
    visiting.push(name.to_owned());
    let source = &sources[name];
    let bytes = if name.ends_with(".js") {
        let text = String::from_utf8(source.bytes.clone()).expect("a module is UTF-8");
        for dependency in sources.keys() {
            if dependency != name && text.contains(&format!("./{dependency}")) {
                resolve(dependency, sources, hashed, visiting);
            }
        }
        rewrite(&text, "./", hashed).into_bytes()
    } else {
        source.bytes.clone()
    };
    visiting.pop();
    let digest = hex(&Sha256::digest(&bytes));
    let (stem, ext) = source
        .name
        .rsplit_once('.')
        .expect("an asset has an extension");
    let served = format!("{stem}.{}.{ext}", &digest[..HASH_LEN]);
    hashed.insert(name.to_owned(), (served, bytes));
}

/// Replaces `<prefix><name>` by `<prefix><hashed name>` for every asset already hashed; a
/// reference is only replaced when it ends with a quote, so `app.js` never matches inside
/// `chaos-app.js`'s name.
fn rewrite(text: &str, prefix: &str, hashed: &BTreeMap<String, (String, Vec<u8>)>) -> String {
    let mut text = text.to_owned();
    for (name, (served, _)) in hashed {
        for quote in ['"', '\''] {
            text = text.replace(
                &format!("{quote}{prefix}{name}{quote}"),
                &format!("{quote}{prefix}{served}{quote}"),
            );
        }
    }
    text
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("asset names are UTF-8")
        .to_owned()
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The ADRs as JSON, in file order.
fn adr_json(dir: &Path) -> String {
    let records: Vec<serde_json::Value> = files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read an ADR");
            adr(&file_name(&path), &text)
        })
        .collect();
    serde_json::Value::Array(records).to_string()
}

/// One ADR: `# N. Title`, `- Status: …`, `- Date: …`, then `## Decision`'s first sentence.
fn adr(file: &str, text: &str) -> serde_json::Value {
    let heading = text
        .lines()
        .find_map(|l| l.strip_prefix("# "))
        .unwrap_or(file)
        .trim();
    let (number, title) = match heading.split_once(". ") {
        Some((n, t)) if n.chars().all(|c| c.is_ascii_digit()) => (n.to_owned(), t.to_owned()),
        _ => (String::new(), heading.to_owned()),
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("- {key}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let decision: String = text
        .split("## Decision")
        .nth(1)
        .unwrap_or_default()
        .split("\n## ")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // The first sentence: up to the first ". " outside backticks.
    let mut in_code = false;
    let mut end = decision.len();
    for (i, c) in decision.char_indices() {
        if c == '`' {
            in_code = !in_code;
        } else if c == '.' && !in_code && decision[i + 1..].starts_with(' ') {
            end = i + 1;
            break;
        }
    }
    serde_json::json!({
        "file": file,
        "number": number,
        "title": title,
        "status": field("Status"),
        "date": field("Date"),
        "decision": decision[..end].to_owned(),
        "body": text,
    })
}
