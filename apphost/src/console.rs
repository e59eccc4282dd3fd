//! The apphost's terminal: every child's lines prefixed with its name (`catalog-2 | …`) and
//! coloured on a TTY, and, while starting, a live status table kept below the log lines (redrawn
//! in place); when stdout is not a TTY, plain lines only.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, PoisonError};

/// ANSI colours cycled over the processes; red is left out (it reads as an error).
const COLOURS: [u8; 6] = [36, 32, 33, 35, 34, 96];

/// Shared writer for everything the apphost prints.
#[derive(Clone)]
pub struct Console {
    /// Whether stdout is a terminal (colours, live table).
    tty: bool,
    /// The live table currently drawn at the bottom, as lines; empty when none.
    live: Arc<Mutex<Vec<String>>>,
    /// Widest process name, to align the prefixes.
    width: usize,
}

impl Console {
    pub fn new(width: usize) -> Self {
        Self {
            tty: std::io::stdout().is_terminal(),
            live: Arc::default(),
            width,
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Prints one line of process `name` (the `index`-th process) with its prefix.
    pub fn line(&self, name: &str, index: usize, line: &str) {
        let text = if self.tty {
            let c = COLOURS[index % COLOURS.len()];
            format!("\x1b[{c}m{name:>w$} |\x1b[0m {line}", w = self.width)
        } else {
            format!("{name:>w$} | {line}", w = self.width)
        };
        self.print(&text);
    }

    /// Prints one line of the apphost's own.
    pub fn note(&self, line: &str) {
        let name = "lab";
        let text = if self.tty {
            format!("\x1b[1m{name:>w$} |\x1b[0m {line}", w = self.width)
        } else {
            format!("{name:>w$} | {line}", w = self.width)
        };
        self.print(&text);
    }

    /// Replaces the live table (TTY only; a no-op otherwise).
    pub fn live(&self, lines: Vec<String>) {
        if !self.tty {
            return;
        }
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(erase(live.len()).as_bytes());
        for l in &lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
        *live = lines;
    }

    /// Removes the live table from the screen.
    pub fn end_live(&self) {
        self.live(Vec::new());
    }

    fn print(&self, text: &str) {
        let live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::io::stdout().lock();
        // A closed stdout (a pipe whose reader went away) must not stop the supervisor.
        let _ = out.write_all(erase(live.len()).as_bytes());
        let _ = writeln!(out, "{text}");
        for l in live.iter() {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }
}

/// Moves the cursor up over `n` lines and clears to the end of the screen.
fn erase(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!("\x1b[{n}F\x1b[J")
    }
}
