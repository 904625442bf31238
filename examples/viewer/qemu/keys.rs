//! `--send-keys`: key names and evdev codes, and typing them.

use std::time::Duration;

use guestfb::source::qemu::{QemuConsole, QemuError};

/// Key names for `--send-keys` and their evdev codes.
const KEY_NAMES: &[(&str, u32)] = &[
    ("esc", 1),
    ("1", 2),
    ("2", 3),
    ("3", 4),
    ("4", 5),
    ("5", 6),
    ("6", 7),
    ("7", 8),
    ("8", 9),
    ("9", 10),
    ("0", 11),
    ("minus", 12),
    ("equal", 13),
    ("backspace", 14),
    ("tab", 15),
    ("q", 16),
    ("w", 17),
    ("e", 18),
    ("r", 19),
    ("t", 20),
    ("y", 21),
    ("u", 22),
    ("i", 23),
    ("o", 24),
    ("p", 25),
    ("enter", 28),
    ("ctrl", 29),
    ("a", 30),
    ("s", 31),
    ("d", 32),
    ("f", 33),
    ("g", 34),
    ("h", 35),
    ("j", 36),
    ("k", 37),
    ("l", 38),
    ("shift", 42),
    ("z", 44),
    ("x", 45),
    ("c", 46),
    ("v", 47),
    ("b", 48),
    ("n", 49),
    ("m", 50),
    ("alt", 56),
    ("space", 57),
    ("f1", 59),
    ("f2", 60),
    ("f3", 61),
    ("f4", 62),
    ("f5", 63),
    ("f6", 64),
    ("f7", 65),
    ("f8", 66),
    ("f9", 67),
    ("f10", 68),
    ("f11", 87),
    ("f12", 88),
    ("home", 102),
    ("up", 103),
    ("pageup", 104),
    ("left", 105),
    ("right", 106),
    ("end", 107),
    ("down", 108),
    ("pagedown", 109),
    ("insert", 110),
    ("delete", 111),
];

/// Evdev key codes of `--send-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList(pub Vec<u32>);

/// Parses `--send-keys KEY[,KEY…]` into evdev codes (names as in [`KEY_NAMES`], or
/// decimal codes).
pub fn parse_keys(text: &str) -> Result<KeyList, String> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            let lower = name.trim().to_ascii_lowercase();
            KEY_NAMES
                .iter()
                .find(|(known, _)| *known == lower)
                .map(|&(_, code)| code)
                .or_else(|| lower.parse().ok())
                .ok_or_else(|| format!("unknown key {name:?}"))
        })
        .collect::<Result<_, _>>()
        .map(KeyList)
}

/// Types `codes` into `console`, each pressed and released, 30 ms apart.
pub fn type_keys(console: &QemuConsole, codes: &[u32]) -> Result<(), QemuError> {
    for &code in codes {
        console.key_press(code)?;
        std::thread::sleep(Duration::from_millis(30));
        console.key_release(code)?;
        std::thread::sleep(Duration::from_millis(30));
    }
    println!("viewer: sent {} key(s)", codes.len());
    Ok(())
}
