//! The messages of the editor workload and their contents, the same for every transport.
//!
//! Answers are made of `Cow<'static, …>` fields: a server answers from its tables without
//! allocating (Ferry's postcard and rkyv codecs encode them in place), a client decodes them
//! into owned values.

use std::borrow::Cow;

use rkyv::with::AsOwned;
use serde::{Deserialize, Serialize};

/// The file the cursor is in: 40 bytes.
pub const PATH: &str = "src/editor/completion/engine/provider.rs";
pub const PREFIX_BYTES: usize = 2048;
pub const SUFFIX_BYTES: usize = 512;
/// A completion request's payload: path, line, column, prefix, suffix.
pub const COMPLETE_REQUEST_BYTES: usize = PATH.len() + 4 + 4 + PREFIX_BYTES + SUFFIX_BYTES;
pub const LINE: u32 = 1234;
pub const COLUMN: u32 = 17;
pub const ITEMS: usize = 5;
pub const CHAT_PROMPT: &str = "explain what this function does and suggest a better name";
pub const DIAGNOSTICS: usize = 20;

/// `len` bytes of plausible Rust source (ASCII, lines of about 40 bytes; quotes and
/// backslashes included, so JSON has something to escape).
pub fn code(len: usize, seed: usize) -> String {
    const LINES: &[&str] = &[
        "    let value = map.get(&key).copied();\n",
        "    if value.is_none() { return Err(\"missing\".into()); }\n",
        "    for (i, item) in items.iter().enumerate() {\n",
        "        total += item.weight * i as u64;\n",
        "    }\n",
        "    println!(\"{total}\\t{}\", name.trim());\n",
        "fn provider(cx: &Context<'_>) -> Result<Vec<Item>> {\n",
        "    // TODO: cache the index between calls\n",
    ];
    let mut s = String::with_capacity(len + 64);
    let mut i = seed;
    while s.len() < len {
        s.push_str(LINES[i % LINES.len()]);
        i += 1;
    }
    s.truncate(len);
    s
}

/// The completion request, borrowed on the server (postcard: no copy, no allocation; JSON:
/// borrowed where nothing was escaped).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CompletionRequest<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    pub line: u32,
    pub column: u32,
    #[serde(borrow)]
    pub prefix: Cow<'a, str>,
    #[serde(borrow)]
    pub suffix: Cow<'a, str>,
}

/// The same request for rkyv (read in place on the server, validated).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct RkyvCompletionRequest {
    pub path: String,
    pub line: u32,
    pub column: u32,
    pub prefix: String,
    pub suffix: String,
}

/// The request every client sends.
pub fn completion_request() -> CompletionRequest<'static> {
    CompletionRequest {
        path: Cow::Borrowed(PATH),
        line: LINE,
        column: COLUMN,
        prefix: Cow::Owned(code(PREFIX_BYTES, 0)),
        suffix: Cow::Owned(code(SUFFIX_BYTES, 3)),
    }
}

pub fn rkyv_completion_request() -> RkyvCompletionRequest {
    let r = completion_request();
    RkyvCompletionRequest {
        path: r.path.into_owned(),
        line: r.line,
        column: r.column,
        prefix: r.prefix.into_owned(),
        suffix: r.suffix.into_owned(),
    }
}

/// What a server checks of a completion request before answering.
pub fn check_completion(path: &str, prefix: &str, suffix: &str, line: u32) -> Result<(), String> {
    if path.len() != PATH.len()
        || prefix.len() != PREFIX_BYTES
        || suffix.len() != SUFFIX_BYTES
        || line != LINE
    {
        return Err(format!(
            "completion request with path {} B, prefix {} B, suffix {} B, line {line}: \
             expected {} B, {PREFIX_BYTES} B, {SUFFIX_BYTES} B, line {LINE}",
            path.len(),
            prefix.len(),
            suffix.len(),
            PATH.len()
        ));
    }
    Ok(())
}

/// One completion: about 80 bytes.
#[derive(
    Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone,
)]
pub struct CompletionItem {
    #[rkyv(with = AsOwned)]
    pub label: Cow<'static, str>,
    #[rkyv(with = AsOwned)]
    pub detail: Cow<'static, str>,
    pub kind: u32,
    pub score: u32,
}

#[derive(
    Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone,
)]
pub struct CompletionList {
    #[rkyv(with = AsOwned)]
    pub items: Cow<'static, [CompletionItem]>,
}

const fn item(label: &'static str, detail: &'static str, kind: u32, score: u32) -> CompletionItem {
    CompletionItem {
        label: Cow::Borrowed(label),
        detail: Cow::Borrowed(detail),
        kind,
        score,
    }
}

/// The answer every server gives: 5 items, each about 80 bytes of strings and numbers.
pub static COMPLETIONS: [CompletionItem; ITEMS] = [
    item(
        "provider_for_path",
        "fn(&self, path: &Path) -> Option<&dyn CompletionProvider>",
        3,
        98,
    ),
    item(
        "provider_cache",
        "HashMap<PathBuf, Arc<dyn CompletionProvider + Send + Sync>>",
        5,
        91,
    ),
    item(
        "provide_items",
        "fn(&self, cx: &Context<'_>, at: Position) -> Vec<CompletionItem>",
        3,
        87,
    ),
    item(
        "ProviderRegistry",
        "struct ProviderRegistry { by_language: BTreeMap<Lang, Entry> }",
        22,
        80,
    ),
    item(
        "prov_settings",
        "fn(&mut self) -> &mut ProviderSettings (from engine::config)",
        3,
        72,
    ),
];

/// What a client checks of a completion answer.
pub fn check_completions(items: &[CompletionItem]) -> Result<(), String> {
    if items.len() != ITEMS
        || items
            .iter()
            .zip(COMPLETIONS.iter())
            .any(|(a, b)| a.label != b.label || a.detail.len() != b.detail.len())
    {
        return Err(format!(
            "a completion answer with {} items differs from the expected {ITEMS}",
            items.len()
        ));
    }
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ChatRequest<'a> {
    #[serde(borrow)]
    pub prompt: Cow<'a, str>,
    pub tokens: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone)]
pub struct RkyvChatRequest {
    pub prompt: String,
    pub tokens: u32,
}

/// One token of a chat answer: 2–8 bytes.
#[derive(
    Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone,
)]
pub struct Token {
    #[rkyv(with = AsOwned)]
    pub text: Cow<'static, str>,
}

/// The vocabulary chat answers cycle through: every token 2 to 8 bytes.
pub const VOCABULARY: &[&str] = &[
    "The",
    " fn",
    " walks",
    " the",
    " tree",
    ",",
    " and",
    " returns",
    " each",
    " node",
    "'s",
    " parent",
    ". ",
    "Rename",
    " it",
    " to",
    " `parents`",
    ".\n",
];

/// The `i`-th token of an answer.
pub fn token(i: usize) -> &'static str {
    let t = VOCABULARY[i % VOCABULARY.len()];
    if t.len() < 2 { ", " } else { t }
}

/// A diagnostic of an analysed file.
#[derive(
    Serialize, Deserialize, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone,
)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub severity: u32,
    #[rkyv(with = AsOwned)]
    pub message: Cow<'static, str>,
}

const MESSAGES: &[&str] = &[
    "unused variable: `value` (prefix it with an underscore)",
    "this `if` has identical blocks",
    "called `unwrap()` on an `Option` value that may be `None`",
    "TODO comment left in the code",
];

/// What every server finds in a file: it reads every byte (counting lines), then reports 20
/// diagnostics spread over the lines.
pub fn analyze(file: &[u8]) -> Vec<Diagnostic> {
    let lines = file.iter().filter(|&&b| b == b'\n').count().max(1) as u32;
    (0..DIAGNOSTICS as u32)
        .map(|i| Diagnostic {
            line: i * lines / DIAGNOSTICS as u32 + 1,
            column: 5 + i % 7,
            severity: 1 + i % 3,
            message: Cow::Borrowed(MESSAGES[i as usize % MESSAGES.len()]),
        })
        .collect()
}

/// What a client checks of the diagnostics of the file it sent.
pub fn check_diagnostics(diagnostics: &[Diagnostic], file: &[u8]) -> Result<(), String> {
    let lines = file.iter().filter(|&&b| b == b'\n').count().max(1) as u32;
    let last = (DIAGNOSTICS as u32 - 1) * lines / DIAGNOSTICS as u32 + 1;
    if diagnostics.len() != DIAGNOSTICS || diagnostics.last().map(|d| d.line) != Some(last) {
        return Err(format!(
            "{} diagnostics for a file of {lines} lines: expected {DIAGNOSTICS}, the last on line \
             {last}",
            diagnostics.len()
        ));
    }
    Ok(())
}

/// The 1 KiB message of the old system's second test (`editor-old-32x1k`).
pub fn blob(size: usize) -> Vec<u8> {
    code(size, 5).into_bytes()
}

#[ferry_rpc::service]
pub trait EditorBench {
    /// Completions, postcard: the request borrows from the ring record.
    fn complete(req: CompletionRequest<'_>) -> CompletionList;
    /// Completions, rkyv: the request is validated and read in place.
    #[codec(rkyv)]
    fn complete_rkyv(req: RkyvCompletionRequest) -> CompletionList;
    /// Completions, JSON (what a JSON-RPC engine would speak over Ferry).
    #[codec(json)]
    fn complete_json(req: CompletionRequest<'_>) -> CompletionList;
    fn chat(req: ChatRequest<'_>) -> impl Stream<Item = Token>;
    #[codec(rkyv)]
    fn chat_rkyv(req: RkyvChatRequest) -> impl Stream<Item = Token>;
    #[codec(json)]
    fn chat_json(req: ChatRequest<'_>) -> impl Stream<Item = Token>;
    /// A file as raw bytes (written straight into the ring); diagnostics in postcard.
    fn analyze(file: &[u8]) -> Vec<Diagnostic>;
    #[codec(rkyv)]
    fn analyze_rkyv(file: &[u8]) -> Vec<Diagnostic>;
    #[codec(json)]
    fn analyze_json(file: &[u8]) -> Vec<Diagnostic>;
    /// The small call of `editor-pipelined`.
    fn ping(seq: u64) -> u64;
    /// The 1 KiB message of `editor-old-32x1k`, echoed.
    fn echo(data: &[u8]) -> Vec<u8>;
}
