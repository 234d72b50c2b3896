//! How a command ends: its exit status as a small enum, and the error that stops it
//! (status, message, hint), rendered in one place (`report::failure`).

use std::fmt;

/// The exit statuses kfix documents (docs/cli.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok,
    /// A host failed or was unreachable (`check`: a problem was found).
    HostProblem,
    /// A flag's value is not one the flag takes (clap's own usage errors are 2 too).
    Usage,
    /// A playbook, inventory, variable or file the operator gave is not usable.
    BadInput,
    /// A real run was not confirmed.
    NotConfirmed,
    /// Undoing a failed change failed: the host needs a person.
    RollbackFailed,
    /// A report or page kfix was asked to write could not be written.
    WriteFailed,
    /// `kfix check --npd`: kfix could not tell (node-problem-detector's Unknown).
    CannotTell,
}

impl Exit {
    pub const fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::HostProblem => 1,
            Exit::Usage => 2,
            Exit::BadInput => 3,
            Exit::NotConfirmed => 4,
            Exit::RollbackFailed => 5,
            Exit::WriteFailed => 6,
            Exit::CannotTell => 2,
        }
    }

    /// The worse of two ends (the higher code): `kfix run A B` exits with its worst.
    pub fn worst(self, other: Exit) -> Exit {
        match other.code() > self.code() {
            true => other,
            false => self,
        }
    }
}

/// What stopped a command: its exit status, what went wrong and what to do about it.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    what: What,
}

#[derive(Debug)]
enum What {
    /// One line (or a few) of message, and a hint.
    Said {
        message: String,
        hint: Option<String>,
    },
    /// Located diagnostics (file:line:col, source line, caret), rendered by `diag`.
    Located(String),
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            what: What::Said {
                message: message.into(),
                hint: None,
            },
        }
    }

    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Usage, message)
    }

    pub fn bad_input(message: impl Into<String>) -> Failure {
        Failure::new(Exit::BadInput, message)
    }

    /// Located diagnostics (a playbook's or inventory's errors): bad input.
    pub fn located(d: impl fmt::Display) -> Failure {
        Failure {
            exit: Exit::BadInput,
            what: What::Located(d.to_string()),
        }
    }

    /// What to do about it, shown as `= hint:` under the message.
    pub fn hint(mut self, h: impl Into<String>) -> Failure {
        if let What::Said { hint, .. } = &mut self.what {
            *hint = Some(h.into());
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            What::Said { message, hint } => {
                write!(f, "error: {message}")?;
                if let Some(h) = hint {
                    write!(f, "\n  = hint: {h}")?;
                }
                Ok(())
            }
            What::Located(d) => f.write_str(d),
        }
    }
}

/// A command's end: its status, or the failure that stopped it.
pub type Ends = Result<Exit, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_renders_message_then_hint_and_keeps_its_status() {
        let f = Failure::usage("--limit: `web[` is not a pattern").hint("web[1:3]");
        assert_eq!(
            f.to_string(),
            "error: --limit: `web[` is not a pattern\n  = hint: web[1:3]"
        );
        assert_eq!(f.exit.code(), 2);
        let d = Failure::located("error: x\n --> a.yml:1:1");
        assert_eq!(d.to_string(), "error: x\n --> a.yml:1:1");
        assert_eq!(d.exit, Exit::BadInput);
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::HostProblem,
            Exit::Usage,
            Exit::BadInput,
            Exit::NotConfirmed,
            Exit::RollbackFailed,
            Exit::WriteFailed,
            Exit::CannotTell,
        ]
        .iter()
        .map(|e| e.code())
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 2], "docs/cli.md's table");
    }
}
