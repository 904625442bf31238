//! Linux evdev key and button codes (what Wayland's `wl_keyboard.key` and
//! `wl_pointer.button` carry) to what QEMU's D-Bus display expects.
//!
//! `org.qemu.Display1.Keyboard.Press(u keycode)` takes a QEMU "key number" (qnum): the
//! PC XT set 1 scancode, with the `0xe0` prefix of extended keys folded into bit 7
//! (`0xe0 0x48`, cursor up, is `0xc8`). QEMU turns it into a `QKeyCode` with
//! `qemu_input_key_number_to_qcode`. The table covers the PC 105-key keyboard plus the
//! Japanese/Korean and media keys QEMU knows; other codes are refused by name.

/// The QEMU key number of a Linux evdev key code, `None` when QEMU has no key for it.
pub fn evdev_to_qnum(code: u32) -> Option<u32> {
    // 1 (KEY_ESC) ..= 83 (KEY_KPDOT): evdev numbered these after set 1 scancodes.
    if (1..=83).contains(&code) {
        return Some(code);
    }
    let xt: u32 = match code {
        85 => 0x76,                       // KEY_ZENKAKUHANKAKU
        86 => 0x56,                       // KEY_102ND
        87 => 0x57,                       // KEY_F11
        88 => 0x58,                       // KEY_F12
        89 => 0x73,                       // KEY_RO
        90 => 0x78,                       // KEY_KATAKANA
        91 => 0x77,                       // KEY_HIRAGANA
        92 => 0x79,                       // KEY_HENKAN
        93 => 0x70,                       // KEY_KATAKANAHIRAGANA
        94 => 0x7b,                       // KEY_MUHENKAN
        95 => 0x5c,                       // KEY_KPJPCOMMA
        96 => 0xe01c,                     // KEY_KPENTER
        97 => 0xe01d,                     // KEY_RIGHTCTRL
        98 => 0xe035,                     // KEY_KPSLASH
        99 => 0x54,                       // KEY_SYSRQ
        100 => 0xe038,                    // KEY_RIGHTALT
        102 => 0xe047,                    // KEY_HOME
        103 => 0xe048,                    // KEY_UP
        104 => 0xe049,                    // KEY_PAGEUP
        105 => 0xe04b,                    // KEY_LEFT
        106 => 0xe04d,                    // KEY_RIGHT
        107 => 0xe04f,                    // KEY_END
        108 => 0xe050,                    // KEY_DOWN
        109 => 0xe051,                    // KEY_PAGEDOWN
        110 => 0xe052,                    // KEY_INSERT
        111 => 0xe053,                    // KEY_DELETE
        113 => 0xe020,                    // KEY_MUTE
        114 => 0xe02e,                    // KEY_VOLUMEDOWN
        115 => 0xe030,                    // KEY_VOLUMEUP
        116 => 0xe05e,                    // KEY_POWER
        117 => 0x59,                      // KEY_KPEQUAL
        119 => 0xe046,                    // KEY_PAUSE
        121 => 0x7e,                      // KEY_KPCOMMA
        122 => 0x72,                      // KEY_HANGEUL
        123 => 0x71,                      // KEY_HANJA
        124 => 0x7d,                      // KEY_YEN
        125 => 0xe05b,                    // KEY_LEFTMETA
        126 => 0xe05c,                    // KEY_RIGHTMETA
        127 => 0xe05d,                    // KEY_COMPOSE
        142 => 0xe05f,                    // KEY_SLEEP
        143 => 0xe063,                    // KEY_WAKEUP
        163 => 0xe019,                    // KEY_NEXTSONG
        164 => 0xe022,                    // KEY_PLAYPAUSE
        165 => 0xe010,                    // KEY_PREVIOUSSONG
        166 => 0xe024,                    // KEY_STOPCD
        183..=188 => 0x5d + (code - 183), // KEY_F13 ..= KEY_F18
        _ => return None,
    };
    Some(if xt & 0xe000 == 0xe000 {
        0x80 | (xt & 0x7f)
    } else {
        xt
    })
}

/// A mouse button as `org.qemu.Display1.Mouse.Press/Release` numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MouseButton {
    /// Left (0).
    Left = 0,
    /// Middle (1).
    Middle = 1,
    /// Right (2).
    Right = 2,
    /// Wheel up (3): a press and a release per wheel step.
    WheelUp = 3,
    /// Wheel down (4).
    WheelDown = 4,
    /// Side / back (5).
    Side = 5,
    /// Extra / forward (6).
    Extra = 6,
}

impl MouseButton {
    /// The button for a Linux evdev button code (`BTN_LEFT` = 0x110 …), if QEMU has it.
    pub fn from_evdev(code: u32) -> Option<Self> {
        Some(match code {
            0x110 => Self::Left,
            0x111 => Self::Right,
            0x112 => Self::Middle,
            0x113 => Self::Side,
            0x114 => Self::Extra,
            _ => return None,
        })
    }

    /// The number on the wire.
    pub fn number(self) -> u32 {
        self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_keys() {
        assert_eq!(evdev_to_qnum(1), Some(0x01)); // Esc
        assert_eq!(evdev_to_qnum(28), Some(0x1c)); // Enter
        assert_eq!(evdev_to_qnum(57), Some(0x39)); // Space
        assert_eq!(evdev_to_qnum(103), Some(0xc8)); // Up
        assert_eq!(evdev_to_qnum(97), Some(0x9d)); // Right Ctrl
        assert_eq!(evdev_to_qnum(96), Some(0x9c)); // KP Enter
        assert_eq!(evdev_to_qnum(125), Some(0xdb)); // Left Meta
        assert_eq!(evdev_to_qnum(88), Some(0x58)); // F12
        assert_eq!(evdev_to_qnum(0), None);
        assert_eq!(evdev_to_qnum(84), None);
        assert_eq!(evdev_to_qnum(0x2ff), None);
    }

    #[test]
    fn buttons() {
        assert_eq!(MouseButton::from_evdev(0x110), Some(MouseButton::Left));
        assert_eq!(
            MouseButton::from_evdev(0x111).map(MouseButton::number),
            Some(2)
        );
        assert_eq!(
            MouseButton::from_evdev(0x112).map(MouseButton::number),
            Some(1)
        );
        assert_eq!(MouseButton::from_evdev(0x120), None);
    }
}
