//! Just enough of the i8042 keyboard controller for a guest to reset the
//! machine: command 0xfe pulses the CPU reset line (`reboot=k`).

const CMD_RESET_CPU: u8 = 0xfe;

#[derive(Debug, Default)]
pub struct I8042 {
    /// Commands seen, other than reset (they have no effect here).
    pub ignored_commands: u64,
}

impl I8042 {
    /// Status register: no data waiting, input buffer empty (ready for commands).
    pub fn read_status(&self) -> u8 {
        0
    }

    /// Returns true when the command resets the machine.
    pub fn write_command(&mut self, command: u8) -> bool {
        if command == CMD_RESET_CPU {
            return true;
        }
        self.ignored_commands += 1;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_0xfe_resets() {
        let mut dev = I8042::default();
        assert!(!dev.write_command(0xaa));
        assert!(dev.write_command(0xfe));
        assert_eq!(dev.ignored_commands, 1);
        assert_eq!(dev.read_status(), 0);
    }
}
