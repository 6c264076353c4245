//! Disassembly helpers (iced-x86's Intel formatter).

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};

/// Decodes `bytes` at `addr` and returns the instructions in order. Invalid encodings come back as
/// `Code::INVALID` instructions (one per undecodable byte run, as iced reports them).
pub fn decode_all(bytes: &[u8], addr: u64, bitness: u32) -> Vec<Instruction> {
    let mut dec = Decoder::with_ip(bitness, bytes, addr, DecoderOptions::NO_INVALID_CHECK);
    let mut out = Vec::new();
    while dec.can_decode() {
        out.push(dec.decode());
    }
    out
}

/// Formats one instruction in Intel syntax.
pub fn format_insn(ins: &Instruction) -> String {
    let mut f = IntelFormatter::new();
    f.options_mut().set_hex_prefix("0x");
    f.options_mut().set_hex_suffix("");
    f.options_mut().set_uppercase_hex(false);
    f.options_mut().set_first_operand_char_index(8);
    let mut s = String::new();
    f.format(ins, &mut s);
    s
}

/// Multi-line listing: address, bytes, Intel-syntax text.
pub fn disassemble(bytes: &[u8], addr: u64, bitness: u32) -> String {
    let mut out = String::new();
    for ins in decode_all(bytes, addr, bitness) {
        let start = (ins.ip() - addr) as usize;
        let raw = &bytes[start..start + ins.len()];
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!("{:#010x}  {:<30} {}\n", ins.ip(), hex, format_insn(&ins)));
    }
    out
}
