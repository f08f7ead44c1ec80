//! In-call feature codes (Kazoo's "Konami" metaflows): what the digits a party presses mean, and the digit
//! collector that gathers them.
//!
//! A listening party presses the binding key (default `*`), then digits; once no digit came for the
//! inter-digit timeout, the digits after the binding key are looked up: first the exact `numbers`, then the
//! `patterns` (regular expressions over the whole string, in order), e.g. `2(\d+)` for `*2` + extension.
//! Digits pressed while not collecting are passed on to the other party (the app absorbs every digit of a
//! call with feature codes, so that feature digits never reach the far end). A binding key pressed while
//! collecting starts over.
//!
//! | collector     | input                         | outcome                                                    |
//! |---------------|-------------------------------|------------------------------------------------------------|
//! | idle          | binding key                   | collecting (nothing yet), deadline = now + digit timeout    |
//! | idle          | another digit                 | passed on to the other party                               |
//! | collecting    | binding key                   | collecting from scratch, new deadline                      |
//! | collecting    | another digit                 | appended, new deadline                                     |
//! | collecting    | deadline                      | idle; the digits are looked up (no match: dropped)         |

use regex::Regex;

use super::Millis;

/// Which parties' digits are feature codes: `a` is the caller's leg (party 0), `b` the callee's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenOn {
    A,
    B,
    Both,
}

impl ListenOn {
    pub fn listens(self, party: usize) -> bool {
        match self {
            ListenOn::A => party == 0,
            ListenOn::B => party == 1,
            ListenOn::Both => true,
        }
    }
}

/// The DTMF attended transfer (`transfer` module): the transferee is held, the transferor hears ringback
/// while the target is dialed, then the two talk; the codes below act during that consultation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferFlow {
    /// Hang up the target and return to the transferee (default `*1`).
    pub takeback_dtmf: String,
    /// Hand the transferee to the target and leave (default `*2`).
    pub complete_dtmf: String,
    /// All three in one call (default `*3`).
    pub threeway_dtmf: String,
    /// Talk to the transferee while the target is held, and back (default `*4`).
    pub swap_dtmf: String,
    /// The music-on-hold class for whoever is held; `None` is Asterisk's default class.
    pub moh: Option<String>,
    /// What the transferor hears while the target rings (default `tone:ring`).
    pub ringback: String,
    /// How long the target may ring.
    pub target_timeout: Millis,
    /// After the transferor hung up and the target failed: how many times the transferor is called back.
    pub recall_retries: u32,
    /// The pause between two of those calls.
    pub recall_delay: Millis,
}

/// The defaults of the `transfer` module: Asterisk's atxfer codes, the ring tone, a 20 s target, two
/// recalls 10 s apart (Asterisk's atxfercallbackretries and atxferloopdelay).
impl Default for TransferFlow {
    fn default() -> Self {
        TransferFlow {
            takeback_dtmf: "*1".into(),
            complete_dtmf: "*2".into(),
            threeway_dtmf: "*3".into(),
            swap_dtmf: "*4".into(),
            moh: None,
            ringback: "tone:ring".into(),
            target_timeout: 20_000,
            recall_retries: 2,
            recall_delay: 10_000,
        }
    }
}

/// What a feature code does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Module {
    Transfer(TransferFlow),
    /// Cancels the transfer in progress and reconnects the transferor with the transferee.
    Resume,
}

/// A feature code's pattern: a regular expression over the whole digit string.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: Regex,
    pub module: Module,
}

/// The feature codes of a call.
#[derive(Debug, Clone)]
pub struct Metaflows {
    pub binding_key: char,
    pub digit_timeout: Millis,
    pub listen_on: ListenOn,
    /// Exact digit strings (after the binding key), tried first.
    pub numbers: Vec<(String, Module)>,
    /// Tried in order after the numbers.
    pub patterns: Vec<Pattern>,
}

/// A looked-up feature code: its module and the text of its first capture group (the target's
/// extension for `2(\d+)`), empty when it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched {
    pub module: Module,
    pub capture: String,
}

impl Metaflows {
    /// What the digits after the binding key mean, if anything.
    pub fn lookup(&self, digits: &str) -> Option<Matched> {
        if let Some((_, module)) = self.numbers.iter().find(|(number, _)| number == digits) {
            return Some(Matched {
                module: module.clone(),
                capture: String::new(),
            });
        }
        self.patterns.iter().find_map(|pattern| {
            let captures = pattern.regex.captures(digits)?;
            Some(Matched {
                module: pattern.module.clone(),
                capture: captures
                    .get(1)
                    .map_or(String::new(), |m| m.as_str().to_owned()),
            })
        })
    }

    /// The resume code as the transferor dials it (binding key and number), if one is configured.
    pub fn resume_dtmf(&self) -> Option<String> {
        self.numbers
            .iter()
            .find(|(_, module)| *module == Module::Resume)
            .map(|(number, _)| format!("{}{number}", self.binding_key))
    }
}

/// What a digit does to a collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Not a feature code: pass it on to the other party.
    PassOn,
    /// Part of a feature code; look the digits up at `deadline` unless another digit comes first.
    Collecting { deadline: Millis },
}

/// The digits one party is pressing.
#[derive(Debug, Default)]
pub struct Collector {
    digits: Option<String>,
    deadline: Option<Millis>,
}

impl Collector {
    /// The lookup deadline currently armed, if collecting.
    pub fn deadline(&self) -> Option<Millis> {
        self.deadline
    }

    pub fn press(&mut self, digit: char, now: Millis, flows: &Metaflows) -> Press {
        match &mut self.digits {
            _ if digit == flows.binding_key => self.digits = Some(String::new()),
            Some(digits) => digits.push(digit),
            None => return Press::PassOn,
        }
        let deadline = now + flows.digit_timeout;
        self.deadline = Some(deadline);
        Press::Collecting { deadline }
    }

    /// The deadline passed: the digits collected, and the collector is idle again.
    pub fn expire(&mut self) -> Option<String> {
        self.deadline = None;
        self.digits.take()
    }
}

/// The digits a transferor presses during a feature-code transfer, matched against the consultation codes
/// as they come (the end of what was pressed; nothing waits for a timeout).
#[derive(Debug, Default, Clone)]
pub struct CommandBuffer {
    recent: String,
}

impl CommandBuffer {
    /// Appends a digit; gives the code the pressed digits now end with, if any (and then starts over).
    pub fn press<'a>(&mut self, digit: char, codes: &[&'a str]) -> Option<&'a str> {
        self.recent.push(digit);
        let longest = codes.iter().map(|c| c.len()).max().unwrap_or(0);
        let excess = self.recent.len().saturating_sub(longest);
        self.recent.drain(..excess);
        let code = codes
            .iter()
            .find(|code| !code.is_empty() && self.recent.ends_with(**code))
            .copied();
        if code.is_some() {
            self.recent.clear();
        }
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> TransferFlow {
        TransferFlow::default()
    }

    fn flows() -> Metaflows {
        Metaflows {
            binding_key: '*',
            digit_timeout: 1_000,
            listen_on: ListenOn::A,
            numbers: vec![("9".into(), Module::Resume), ("2".into(), Module::Resume)],
            patterns: vec![
                Pattern {
                    regex: Regex::new(r"^(?:2(\d+))$").unwrap(),
                    module: Module::Transfer(flow()),
                },
                Pattern {
                    regex: Regex::new(r"^(?:2(\d{3}))$").unwrap(),
                    module: Module::Resume,
                },
            ],
        }
    }

    fn press_all(collector: &mut Collector, digits: &str, start: Millis) -> Vec<Press> {
        digits
            .chars()
            .enumerate()
            .map(|(i, d)| collector.press(d, start + 300 * i as Millis, &flows()))
            .collect()
    }

    #[test]
    fn digits_outside_a_code_are_passed_on() {
        let mut collector = Collector::default();
        assert_eq!(press_all(&mut collector, "12#", 0), vec![Press::PassOn; 3]);
        assert_eq!(collector.expire(), None);
    }

    #[test]
    fn each_digit_pushes_the_deadline_and_the_timeout_ends_the_code() {
        let mut collector = Collector::default();
        let presses = press_all(&mut collector, "*2201", 0);
        assert_eq!(presses[0], Press::Collecting { deadline: 1_000 });
        assert_eq!(presses[4], Press::Collecting { deadline: 2_200 });
        assert_eq!(collector.deadline(), Some(2_200));
        assert_eq!(collector.expire().as_deref(), Some("2201"));
        // Idle again: the next digit is passed on.
        assert_eq!(collector.press('5', 3_000, &flows()), Press::PassOn);
    }

    #[test]
    fn a_binding_key_pressed_twice_starts_over() {
        let mut collector = Collector::default();
        press_all(&mut collector, "*22*2201", 0);
        assert_eq!(collector.expire().as_deref(), Some("2201"));
    }

    #[test]
    fn numbers_come_before_patterns_and_patterns_go_in_order() {
        let flows = flows();
        // "2" is a number (resume), though `2(\d+)` cannot match it anyway; "9" too.
        assert_eq!(flows.lookup("9").map(|m| m.module), Some(Module::Resume));
        // `2(\d+)` comes first and also matches what `2(\d{3})` would.
        let matched = flows.lookup("2201").unwrap();
        assert_eq!(matched.module, Module::Transfer(flow()));
        assert_eq!(matched.capture, "201");
        assert_eq!(flows.lookup("7"), None);
        assert_eq!(flows.lookup(""), None);
        assert_eq!(flows.resume_dtmf().as_deref(), Some("*9"));
    }

    #[test]
    fn only_the_listening_legs_listen() {
        assert!(ListenOn::A.listens(0) && !ListenOn::A.listens(1));
        assert!(!ListenOn::B.listens(0) && ListenOn::B.listens(1));
        assert!(ListenOn::Both.listens(0) && ListenOn::Both.listens(1));
    }

    #[test]
    fn consultation_codes_match_the_end_of_what_was_pressed() {
        let codes = ["*1", "*2", "*3", "*4"];
        let mut buffer = CommandBuffer::default();
        let pressed: Vec<Option<&str>> =
            "55*3*1".chars().map(|d| buffer.press(d, &codes)).collect();
        assert_eq!(
            pressed,
            vec![None, None, None, Some("*3"), None, Some("*1")]
        );
        // A code is used once: the buffer starts over after it.
        assert_eq!(buffer.press('1', &codes), None);
    }
}
