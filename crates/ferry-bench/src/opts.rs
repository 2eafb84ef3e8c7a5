//! The options of every role: `--key value` pairs after the role and its positional arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::os;

/// Options of every role: `--key value` pairs after the role and its positional arguments.
#[derive(Debug, Default)]
pub struct Opts {
    map: BTreeMap<String, String>,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<(Vec<String>, Opts), String> {
        let mut positional = Vec::new();
        let mut map = BTreeMap::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if let Some(key) = arg.strip_prefix("--") {
                let value = it
                    .next()
                    .ok_or_else(|| format!("`--{key}` needs a value"))?;
                map.insert(key.to_owned(), value.clone());
            } else {
                positional.push(arg.clone());
            }
        }
        Ok((positional, Opts { map }))
    }

    pub fn str(&self, key: &str) -> Result<&str, String> {
        self.map
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("missing `--{key} <value>`"))
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.map.get(key).map_or(default, String::as_str)
    }

    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.map.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|_| format!("`--{key}` wants a whole number, got `{raw}`")),
        }
    }

    pub fn path(&self, key: &str) -> Result<PathBuf, String> {
        self.str(key).map(PathBuf::from)
    }

    pub fn duration(&self, default_ms: u64) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.num("duration-ms", default_ms)?))
    }

    /// `--cpu N` pins the calling process to CPU `N` (the harness's `--pin`).
    pub fn pin(&self) -> Result<(), String> {
        let Some(raw) = self.map.get("cpu") else {
            return Ok(());
        };
        let cpu: usize = raw
            .parse()
            .map_err(|_| format!("`--cpu` wants a CPU number, got `{raw}`"))?;
        os::pin(cpu)
    }
}
