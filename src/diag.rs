//! Diagnostics for bad input: one error with its source position, a caret snippet and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

/// A position in a source file, 1-based line and column (columns count characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One problem in an input file (playbook, inventory, vars), rendered like a compiler error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Option<Pos>,
    pub message: String,
    pub hint: Option<String>,
    /// The source line the position points into, kept so rendering needs no file access.
    pub source_line: Option<String>,
    /// How many characters the caret underlines (at least one).
    pub width: usize,
}

impl Diagnostic {
    /// A diagnostic about a whole file (no position).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            pos: None,
            message: message.into(),
            hint: None,
            source_line: None,
            width: 1,
        }
    }

    /// A diagnostic at `pos` in `source` (the file's full text, used for the snippet).
    pub fn at(file: &Path, source: &str, pos: Pos, message: impl Into<String>) -> Self {
        let source_line = (pos.line >= 1)
            .then(|| source.lines().nth(pos.line - 1).map(str::to_string))
            .flatten();
        let width = source_line
            .as_deref()
            .map(|l| token_width(l, pos.col))
            .unwrap_or(1);
        Diagnostic {
            file: file.to_path_buf(),
            pos: Some(pos),
            message: message.into(),
            hint: None,
            source_line,
            width,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// `file:line:col` (or just the file when there is no position).
    pub fn location(&self) -> String {
        match self.pos {
            Some(p) => format!("{}:{}:{}", self.file.display(), p.line, p.col),
            None => self.file.display().to_string(),
        }
    }
}

/// The width of the token starting at 1-based character column `col`: up to the next
/// whitespace, `:` or `,`, so a caret underlines a key or a plain scalar.
fn token_width(line: &str, col: usize) -> usize {
    let rest: String = line.chars().skip(col.saturating_sub(1)).collect();
    let quoted = rest.starts_with('"') || rest.starts_with('\'');
    if quoted {
        let q = rest.chars().next().unwrap_or('"');
        let n = rest.chars().skip(1).take_while(|c| *c != q).count();
        return (n + 2).min(rest.chars().count()).max(1);
    }
    rest.chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | '}' | ']'))
        .count()
        .max(1)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        // Laid out like rustc: the gutter is as wide as the line number.
        let num = self.pos.map_or(String::new(), |p| p.line.to_string());
        let pad = " ".repeat(num.len().max(1));
        write!(f, "{pad}--> {}", self.location())?;
        if let (Some(pos), Some(line)) = (self.pos, &self.source_line) {
            writeln!(f)?;
            writeln!(f, "{pad} |")?;
            writeln!(f, "{num} | {line}")?;
            let lead: String = line
                .chars()
                .take(pos.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "{pad} | {lead}{}", "^".repeat(self.width))?;
        }
        if let Some(h) = &self.hint {
            write!(f, "\n{pad} = hint: {h}")?;
        }
        Ok(())
    }
}

/// Several diagnostics, rendered one after another with a blank line between them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n\nerror: {} problems found", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_caret_under_token() {
        let src = "id: x\nstepz:\n  - a\n";
        let d = Diagnostic::at(
            Path::new("p.yaml"),
            src,
            Pos { line: 2, col: 1 },
            "unknown field `stepz`",
        )
        .with_hint("did you mean `steps`?");
        assert_eq!(
            d.to_string(),
            "error: unknown field `stepz`\n --> p.yaml:2:1\n  |\n2 | stepz:\n  | ^^^^^\n  = hint: did you mean `steps`?"
        );
    }
}
