//! The machine's input port: the one way host-originated input reaches the guest.
//!
//! Everything the host gives a running guest (console bytes for a UART, keys and mouse motion from a display
//! window for the i8042, and later disk completions
//! and other host-backed devices) is a [`GuestInput`]. [`crate::Machine::inject`] stamps it with the
//! instruction slot at which the guest sees it ([`StampedInput::slot`]: retired instructions plus idle
//! slots, the clock's time base), hands it to the recorder if one is installed, and delivers it. Input
//! from the host's channel ([`crate::Machine::attach_input`]) is taken only at deterministic points:
//! at the start of every [`crate::Machine::run`] and at every multiple of [`INPUT_QUANTUM`] slots (the
//! run loop ends its slices there while a channel is attached), or, when the guest is halted with
//! nothing else to wake it, when the input arrives. A log of stamped inputs is therefore enough to
//! replay a session: deliver each input at its slot.
//!
//! The RTC's start time (`--rtc`, which may be the host's clock with `now`) is an input too, taken when
//! the machine is built: a recorder is given it first, stamped at slot 0. The user's quit and the end
//! of the host's input are stamped and recorded too (they decide where a run ends), but give the guest
//! nothing. [`crate::Machine::replay_inputs`] puts a log back in place of the channel.

use vmcore::DeviceId;

/// Slots between two points at which host input is taken (100 µs of virtual time at the default 1e9
/// instructions per second).
pub const INPUT_QUANTUM: u64 = 100_000;

/// One host input for the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestInput {
    /// Bytes for a serial port's receiver (the console on COM1).
    Serial {
        /// The UART's registry id.
        device: DeviceId,
        /// The bytes, in order.
        bytes: Vec<u8>,
    },
    /// PS/2 scan code set 2 bytes from a host keyboard (a display window), for the i8042's keyboard.
    Keyboard(Vec<u8>),
    /// Host mouse motion and buttons (a display window), for the i8042's PS/2 mouse.
    Mouse {
        /// Motion to the right.
        dx: i16,
        /// Motion up.
        dy: i16,
        /// Wheel steps.
        dz: i8,
        /// Buttons held: bit 0 left, 1 right, 2 middle.
        buttons: u8,
    },
    /// The RTC's time at power-on, in UNIX seconds (given when the machine is built).
    RtcStart(i64),
    /// The user quit (Ctrl-A x): nothing for the guest, but the run ends here, so a recording keeps it.
    Quit,
    /// The host's input side closed (end of a piped stdin): from here on nothing can wake a guest
    /// waiting only for input, so a recording keeps it.
    EndOfInput,
}

/// An input with the slot at which the guest saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StampedInput {
    /// Retired instructions plus idle slots (the clock's time base) at delivery.
    pub slot: u64,
    /// The input.
    pub input: GuestInput,
}

/// Called with every input as it is delivered (record/replay logs them).
pub type InputRecorder = Box<dyn FnMut(&StampedInput)>;

/// The first input point after `slot` (a multiple of [`INPUT_QUANTUM`]).
pub fn next_input_point(slot: u64) -> u64 {
    (slot / INPUT_QUANTUM).saturating_add(1).saturating_mul(INPUT_QUANTUM)
}

/// The first input point at or after `slot` (`slot` itself when it is a multiple of [`INPUT_QUANTUM`]).
pub fn input_point_at_or_after(slot: u64) -> u64 {
    if slot.is_multiple_of(INPUT_QUANTUM) { slot } else { next_input_point(slot) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_at_or_after_a_slot_is_the_slot_itself_on_a_multiple() {
        assert_eq!(input_point_at_or_after(0), 0);
        assert_eq!(input_point_at_or_after(1), INPUT_QUANTUM);
        assert_eq!(input_point_at_or_after(INPUT_QUANTUM), INPUT_QUANTUM);
        assert_eq!(input_point_at_or_after(INPUT_QUANTUM + 1), 2 * INPUT_QUANTUM);
    }

    #[test]
    fn input_points_are_the_next_multiple_of_the_quantum() {
        assert_eq!(next_input_point(0), INPUT_QUANTUM);
        assert_eq!(next_input_point(INPUT_QUANTUM - 1), INPUT_QUANTUM);
        assert_eq!(next_input_point(INPUT_QUANTUM), 2 * INPUT_QUANTUM);
        assert!(next_input_point(u64::MAX) >= u64::MAX - INPUT_QUANTUM);
    }
}
