//! Host keys to PC scan codes: a key named by its USB HID usage (the numbering SDL's scancodes use)
//! becomes the bytes a PS/2 keyboard sends in scan code set 2, the set the i8042 receives from its
//! keyboard (the controller translates to set 1 when the guest asks for it, see `chipset::i8042`).
//!
//! Make codes are one byte, or `E0` and a byte for the extended keys; a break code puts `F0` before
//! the last byte. Two keys have sequences of their own: Pause sends `E1 14 77 E1 F0 14 F0 77` when
//! pressed and nothing when released; Print Screen sends `E0 12 E0 7C` pressed and `E0 F0 7C E0 F0 12`
//! released (its make includes a fake left shift, as on a real keyboard without modifiers held).

/// USB HID usage of Print Screen.
const PRINT_SCREEN: u16 = 0x46;
/// USB HID usage of Pause.
const PAUSE: u16 = 0x48;

/// The set 2 make code of the key with USB HID usage `usage`: (extended with `E0`, code), or `None` for a
/// key a PC keyboard does not have.
pub fn set2_code(usage: u16) -> Option<(bool, u8)> {
    // Letters a-z (usages 0x04-0x1D), in alphabetical order.
    const LETTERS: [u8; 26] = [
        0x1C, 0x32, 0x21, 0x23, 0x24, 0x2B, 0x34, 0x33, 0x43, 0x3B, 0x42, 0x4B, 0x3A, 0x31, 0x44, 0x4D, 0x15,
        0x2D, 0x1B, 0x2C, 0x3C, 0x2A, 0x1D, 0x22, 0x35, 0x1A,
    ];
    // 1-9, 0 (usages 0x1E-0x27).
    const DIGITS: [u8; 10] = [0x16, 0x1E, 0x26, 0x25, 0x2E, 0x36, 0x3D, 0x3E, 0x46, 0x45];
    // F1-F12 (usages 0x3A-0x45).
    const FKEYS: [u8; 12] = [0x05, 0x06, 0x04, 0x0C, 0x03, 0x0B, 0x83, 0x0A, 0x01, 0x09, 0x78, 0x07];
    // Keypad 1-9, 0 (usages 0x59-0x62).
    const KEYPAD: [u8; 10] = [0x69, 0x72, 0x7A, 0x6B, 0x73, 0x74, 0x6C, 0x75, 0x7D, 0x70];
    let plain = |c: u8| Some((false, c));
    let ext = |c: u8| Some((true, c));
    match usage {
        0x04..=0x1D => plain(LETTERS[usize::from(usage - 0x04)]),
        0x1E..=0x27 => plain(DIGITS[usize::from(usage - 0x1E)]),
        0x28 => plain(0x5A), // Enter
        0x29 => plain(0x76), // Escape
        0x2A => plain(0x66), // Backspace
        0x2B => plain(0x0D), // Tab
        0x2C => plain(0x29), // Space
        0x2D => plain(0x4E), // - _
        0x2E => plain(0x55), // = +
        0x2F => plain(0x54), // [ {
        0x30 => plain(0x5B), // ] }
        0x31 => plain(0x5D), // \ |
        0x33 => plain(0x4C), // ; :
        0x34 => plain(0x52), // ' "
        0x35 => plain(0x0E), // ` ~
        0x36 => plain(0x41), // , <
        0x37 => plain(0x49), // . >
        0x38 => plain(0x4A), // / ?
        0x39 => plain(0x58), // Caps Lock
        0x3A..=0x45 => plain(FKEYS[usize::from(usage - 0x3A)]),
        0x47 => plain(0x7E), // Scroll Lock
        0x49 => ext(0x70),   // Insert
        0x4A => ext(0x6C),   // Home
        0x4B => ext(0x7D),   // Page Up
        0x4C => ext(0x71),   // Delete
        0x4D => ext(0x69),   // End
        0x4E => ext(0x7A),   // Page Down
        0x4F => ext(0x74),   // Right
        0x50 => ext(0x6B),   // Left
        0x51 => ext(0x72),   // Down
        0x52 => ext(0x75),   // Up
        0x53 => plain(0x77), // Num Lock
        0x54 => ext(0x4A),   // Keypad /
        0x55 => plain(0x7C), // Keypad *
        0x56 => plain(0x7B), // Keypad -
        0x57 => plain(0x79), // Keypad +
        0x58 => ext(0x5A),   // Keypad Enter
        0x59..=0x62 => plain(KEYPAD[usize::from(usage - 0x59)]),
        0x63 => plain(0x71), // Keypad .
        0x64 => plain(0x61), // the 102nd key (non-US \ |)
        0x65 => ext(0x2F),   // Application (menu)
        0x66 => ext(0x37),   // Power
        0x7F => ext(0x23),   // Mute
        0x80 => ext(0x32),   // Volume Up
        0x81 => ext(0x21),   // Volume Down
        0x87 => plain(0x51), // International 1 (Ro)
        0x89 => plain(0x6A), // International 3 (Yen)
        0xE0 => plain(0x14), // Left Ctrl
        0xE1 => plain(0x12), // Left Shift
        0xE2 => plain(0x11), // Left Alt
        0xE3 => ext(0x1F),   // Left GUI
        0xE4 => ext(0x14),   // Right Ctrl
        0xE5 => plain(0x59), // Right Shift
        0xE6 => ext(0x11),   // Right Alt
        0xE7 => ext(0x27),   // Right GUI
        _ => None,
    }
}

/// The set 2 bytes for pressing (`down`) or releasing the key with USB HID usage `usage` (empty for a
/// key a PC keyboard does not have). A held key's repeats are presses again, as a keyboard's typematic
/// repeat sends them.
pub fn set2_bytes(usage: u16, down: bool) -> Vec<u8> {
    match (usage, down) {
        (PAUSE, true) => vec![0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77],
        (PAUSE, false) => Vec::new(),
        (PRINT_SCREEN, true) => vec![0xE0, 0x12, 0xE0, 0x7C],
        (PRINT_SCREEN, false) => vec![0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12],
        _ => match set2_code(usage) {
            None => Vec::new(),
            Some((e, c)) => {
                let mut v = Vec::with_capacity(3);
                if e {
                    v.push(0xE0);
                }
                if !down {
                    v.push(0xF0);
                }
                v.push(c);
                v
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan code set 1 make codes (IBM PC/XT numbering, as every PC reference lists them) of some
    /// keys, with their HID usages: an independent table to check set 2 against through the 8042's
    /// fixed translation of set 2 to set 1.
    const SET1: [(u16, bool, u8); 24] = [
        (0x04, false, 0x1E), // A
        (0x1D, false, 0x2C), // Z
        (0x1E, false, 0x02), // 1
        (0x27, false, 0x0B), // 0
        (0x28, false, 0x1C), // Enter
        (0x29, false, 0x01), // Escape
        (0x2C, false, 0x39), // Space
        (0x35, false, 0x29), // `
        (0x3A, false, 0x3B), // F1
        (0x40, false, 0x41), // F7
        (0x44, false, 0x57), // F11
        (0x45, false, 0x58), // F12
        (0x52, true, 0x48),  // Up
        (0x51, true, 0x50),  // Down
        (0x49, true, 0x52),  // Insert
        (0x4C, true, 0x53),  // Delete
        (0x54, true, 0x35),  // Keypad /
        (0x58, true, 0x1C),  // Keypad Enter
        (0x55, false, 0x37), // Keypad *
        (0x62, false, 0x52), // Keypad 0
        (0xE0, false, 0x1D), // Left Ctrl
        (0xE4, true, 0x1D),  // Right Ctrl
        (0xE5, false, 0x36), // Right Shift
        (0xE6, true, 0x38),  // Right Alt
    ];

    /// The 8042's set 2 to set 1 translation of the codes above (from the 8042's translation table as
    /// IBM's Technical Reference gives it, for these codes only).
    fn xlate(code: u8) -> Option<u8> {
        let table: [(u8, u8); 23] = [
            (0x1C, 0x1E),
            (0x1A, 0x2C),
            (0x16, 0x02),
            (0x45, 0x0B),
            (0x5A, 0x1C),
            (0x76, 0x01),
            (0x29, 0x39),
            (0x0E, 0x29),
            (0x05, 0x3B),
            (0x83, 0x41),
            (0x78, 0x57),
            (0x07, 0x58),
            (0x75, 0x48),
            (0x72, 0x50),
            (0x70, 0x52),
            (0x71, 0x53),
            (0x4A, 0x35),
            (0x7C, 0x37),
            (0x14, 0x1D),
            (0x59, 0x36),
            (0x11, 0x38),
            (0x1F, 0x5B),
            (0x27, 0x5C),
        ];
        table.iter().find(|(s2, _)| *s2 == code).map(|(_, s1)| *s1)
    }

    #[test]
    fn set2_codes_agree_with_set1_through_the_translation() {
        for (usage, ext, s1) in SET1 {
            let (e, c) = set2_code(usage).unwrap_or_else(|| panic!("usage {usage:#x} unmapped"));
            assert_eq!(e, ext, "usage {usage:#x}: extended");
            assert_eq!(xlate(c), Some(s1), "usage {usage:#x}: set 2 {c:#04x}");
        }
    }

    #[test]
    fn no_two_keys_share_a_code() {
        let mut seen = std::collections::HashMap::new();
        for usage in 0..=0xFFu16 {
            if let Some(code) = set2_code(usage)
                && let Some(other) = seen.insert(code, usage)
            {
                panic!("usages {other:#x} and {usage:#x} both give {code:?}");
            }
        }
        assert!(seen.len() >= 100, "a full PC keyboard: {} keys", seen.len());
    }

    #[test]
    fn make_break_extended_and_the_special_sequences() {
        assert_eq!(set2_bytes(0x04, true), [0x1C]);
        assert_eq!(set2_bytes(0x04, false), [0xF0, 0x1C]);
        assert_eq!(set2_bytes(0x52, true), [0xE0, 0x75]);
        assert_eq!(set2_bytes(0x52, false), [0xE0, 0xF0, 0x75]);
        assert_eq!(set2_bytes(PAUSE, true), [0xE1, 0x14, 0x77, 0xE1, 0xF0, 0x14, 0xF0, 0x77]);
        assert!(set2_bytes(PAUSE, false).is_empty(), "Pause has no break code");
        assert_eq!(set2_bytes(PRINT_SCREEN, true), [0xE0, 0x12, 0xE0, 0x7C]);
        assert_eq!(set2_bytes(PRINT_SCREEN, false), [0xE0, 0xF0, 0x7C, 0xE0, 0xF0, 0x12]);
        assert!(set2_bytes(0x200, true).is_empty(), "an unknown key sends nothing");
        // No key's bytes contain the i8042's mouse marker (0xFF) of host input.
        for u in 0..=0xFFu16 {
            assert!(!set2_bytes(u, true).contains(&0xFF) && !set2_bytes(u, false).contains(&0xFF));
        }
    }
}
