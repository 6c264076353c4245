//! Register-level tests of the VGA and DISPI (values from the IBM VGA technical reference and Bochs's
//! `vbe_display_api.txt`).

use super::*;

fn out(v: &mut Vga, port: u16, val: u8) {
    v.port_write(port, val);
}

fn seq(v: &mut Vga, i: u8, val: u8) {
    out(v, 0x3C4, i);
    out(v, 0x3C5, val);
}

fn gc(v: &mut Vga, i: u8, val: u8) {
    out(v, 0x3CE, i);
    out(v, 0x3CF, val);
}

fn crtc(v: &mut Vga, i: u8, val: u8) {
    out(v, 0x3D4, i);
    out(v, 0x3D5, val);
}

fn dispi(v: &mut Vga, i: u16, val: u16) {
    v.vbe_index = i;
    v.dispi_write(val);
}

#[test]
fn pci_identity_and_bars() {
    let v = Vga::new();
    assert_eq!(v.config().u16(0), 0x1234);
    assert_eq!(v.config().u16(2), 0x1111);
    assert_eq!(v.config().u8(0x0B), 0x03, "display controller");
    assert_eq!(v.config().bar(0).unwrap().size, 16 << 20);
    assert!(v.config().bar(0).unwrap().prefetchable);
    assert_eq!(v.config().bar(2).unwrap().size, 0x1000);
}

#[test]
fn dispi_identity_memory_size_and_caps() {
    let mut v = Vga::new();
    v.vbe_index = dispi::ID as u16;
    assert_eq!(v.dispi_read(), 0xB0C5);
    dispi(&mut v, dispi::ID as u16, 0xB0C2);
    assert_eq!(v.dispi_read(), 0xB0C2, "a supported older interface is selected");
    dispi(&mut v, dispi::ID as u16, 0x1234);
    assert_eq!(v.dispi_read(), 0xB0C2, "an unknown ID is ignored");
    v.vbe_index = dispi::VIDEO_MEMORY_64K as u16;
    assert_eq!(v.dispi_read(), 256);
    dispi(&mut v, dispi::ENABLE as u16, dispi::GETCAPS);
    v.vbe_index = dispi::XRES as u16;
    assert_eq!(v.dispi_read(), dispi::MAX_XRES);
    v.vbe_index = dispi::BPP as u16;
    assert_eq!(v.dispi_read(), 32);
    dispi(&mut v, dispi::ENABLE as u16, 0);
    dispi(&mut v, dispi::BPP as u16, 13);
    assert_eq!(v.vbe[dispi::BPP], 0, "unsupported depth refused");
}

#[test]
fn dispi_mode_set_clears_memory_and_lfb_shows_pixels() {
    let mut v = Vga::new();
    v.vram[..16].fill(0xAA);
    dispi(&mut v, dispi::XRES as u16, 8);
    dispi(&mut v, dispi::YRES as u16, 2);
    dispi(&mut v, dispi::BPP as u16, 32);
    dispi(&mut v, dispi::ENABLE as u16, dispi::ENABLED | 0x40);
    assert!(v.vram[..64].iter().all(|b| *b == 0), "enable without NOCLEARMEM clears the frame");
    assert_eq!(v.vbe[dispi::VIRT_WIDTH], 8);
    // Pixel (1, 1) through the LFB (BGRX).
    let o = (8 + 1) * 4;
    v.vram[o..o + 4].copy_from_slice(&[0x10, 0x20, 0x30, 0]);
    let f = v.render();
    assert_eq!((f.width, f.height), (8, 2));
    assert_eq!(&f.rgb[(8 + 1) * 3..(8 + 1) * 3 + 3], &[0x30, 0x20, 0x10]);
    // While enabled, the resolution is fixed.
    dispi(&mut v, dispi::XRES as u16, 640);
    assert_eq!(v.vbe[dispi::XRES], 8);
}

#[test]
fn attribute_flip_flop_resets_on_input_status_read() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01); // colour ports
    out(&mut v, 0x3C0, 0x01);
    out(&mut v, 0x3C0, 0x3F); // palette 1 = 0x3F
    out(&mut v, 0x3C0, 0x02); // index again
    let _ = v.port_read(0, 0x3DA);
    out(&mut v, 0x3C0, 0x30); // flip-flop back at index: index 0x10 with PAS set
    out(&mut v, 0x3C0, 0x41);
    assert_eq!(v.ar[1], 0x3F);
    assert_eq!(v.ar[0x10], 0x41);
    assert_eq!(v.port_read(0, 0x3C0), 0x30);
    assert_eq!(v.port_read(0, 0x3C1), 0x41);
}

#[test]
fn mono_and_colour_crtc_ports_follow_misc_output() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x00); // mono: CRTC at 0x3B4
    out(&mut v, 0x3B4, 0x0E);
    out(&mut v, 0x3B5, 0x12);
    assert_eq!(v.crtc[0x0E], 0x12);
    assert_eq!(v.port_read(0, 0x3D5), 0xFF, "colour port absent in mono mode");
    out(&mut v, 0x3C2, 0x01);
    crtc(&mut v, 0x0F, 0x34);
    assert_eq!(v.crtc[0x0F], 0x34);
    assert_eq!(v.port_read(0, 0x3CC), 0x01);
}

#[test]
fn crtc_write_protect() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01);
    crtc(&mut v, 0x01, 0x4F);
    crtc(&mut v, 0x11, 0x80);
    crtc(&mut v, 0x01, 0x27);
    assert_eq!(v.crtc[1], 0x4F, "CR01 protected");
    crtc(&mut v, 0x07, 0xFF);
    assert_eq!(v.crtc[7], 0x10, "only CR07 bit 4 writable");
    crtc(&mut v, 0x13, 0x28);
    assert_eq!(v.crtc[0x13], 0x28, "CR13 unaffected");
}

#[test]
fn dac_write_and_read_cycle() {
    let mut v = Vga::new();
    out(&mut v, 0x3C8, 5);
    for c in [0x3F, 0x20, 0x41] {
        out(&mut v, 0x3C9, c);
    }
    assert_eq!(v.port_read(0, 0x3C8), 6, "write index advanced after three components");
    assert_eq!(v.port_read(0, 0x3C7), 0, "DAC state: write mode");
    out(&mut v, 0x3C7, 5);
    assert_eq!(v.port_read(0, 0x3C7), 3, "DAC state: read mode");
    let rgb: Vec<u8> = (0..3).map(|_| v.port_read(0, 0x3C9)).collect();
    assert_eq!(rgb, [0x3F, 0x20, 0x01], "6-bit DAC keeps the low six bits");
    assert_eq!(v.dac_rgb(5), [0xFF, 0x82, 0x04], "6-bit values widened to 8");
}

#[test]
fn retrace_bits_follow_virtual_time() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01);
    assert_eq!(v.port_read(10, 0x3DA) & 0x09, 0x09, "vertical retrace at the frame start");
    let mid = FRAME_NS / 2;
    let line_start = mid - mid % LINE_NS;
    assert_eq!(v.port_read(line_start + 10, 0x3DA), 0x01, "horizontal blank");
    assert_eq!(v.port_read(line_start + HBLANK_NS + 10, 0x3DA), 0x00, "display");
    assert_eq!(v.port_read(FRAME_NS + 5, 0x3DA) & 0x08, 0x08, "next frame");
}

/// Mode 12h-style planar set-up: graphics, A0000 64 KiB, planar.
fn planar() -> Vga {
    let mut v = Vga::new();
    seq(&mut v, 4, 0x06);
    gc(&mut v, 6, 0x05);
    seq(&mut v, 2, 0x0F);
    gc(&mut v, 8, 0xFF);
    v
}

#[test]
fn write_mode_0_set_reset_bit_mask_and_latches() {
    let mut v = planar();
    gc(&mut v, 1, 0x05); // enable set/reset on planes 0 and 2
    gc(&mut v, 0, 0x01); // set/reset: plane 0 ones, plane 2 zeros
    v.mem_write(0, 0x3C);
    assert_eq!(&v.vram[0..4], &[0xFF, 0x3C, 0x00, 0x3C]);
    // Bit mask 0x0F: the upper nibble comes from the latches (loaded by a read).
    gc(&mut v, 1, 0);
    let _ = v.mem_read(0);
    gc(&mut v, 8, 0x0F);
    v.mem_write(0, 0x00);
    assert_eq!(&v.vram[0..4], &[0xF0, 0x30, 0x00, 0x30]);
    // Logical function XOR with the latches, rotate by 4.
    gc(&mut v, 8, 0xFF);
    let _ = v.mem_read(0);
    gc(&mut v, 3, (3 << 3) | 4);
    v.mem_write(0, 0x0F);
    assert_eq!(&v.vram[0..4], &[0x00, 0xC0, 0xF0, 0xC0]);
    // Map mask: only plane 1 written.
    gc(&mut v, 3, 0);
    seq(&mut v, 2, 0x02);
    v.mem_write(0, 0x55);
    assert_eq!(&v.vram[0..4], &[0x00, 0x55, 0xF0, 0xC0]);
}

#[test]
fn write_modes_1_2_3() {
    let mut v = planar();
    v.vram[4..8].copy_from_slice(&[1, 2, 3, 4]);
    let _ = v.mem_read(1);
    gc(&mut v, 5, 1);
    v.mem_write(0, 0xEE);
    assert_eq!(&v.vram[0..4], &[1, 2, 3, 4], "write mode 1 copies the latches");
    gc(&mut v, 5, 2);
    gc(&mut v, 8, 0xF0);
    v.mem_write(2, 0x09); // colour 9: planes 0 and 3
    assert_eq!(&v.vram[8..12], &[0xF1, 0x02, 0x03, 0xF4], "unmasked bits from the latches");
    gc(&mut v, 5, 3);
    gc(&mut v, 8, 0xFF);
    gc(&mut v, 0, 0x06); // set/reset colour 6
    let _ = v.mem_read(3);
    v.mem_write(3, 0x81);
    assert_eq!(&v.vram[12..16], &[0x00, 0x81, 0x81, 0x00], "write mode 3: data masks the set/reset colour");
}

#[test]
fn read_modes() {
    let mut v = planar();
    v.vram[0..4].copy_from_slice(&[0b1100_0000, 0b1010_0000, 0, 0]);
    gc(&mut v, 4, 1);
    assert_eq!(v.mem_read(0), 0b1010_0000, "read mode 0: the read map's plane");
    gc(&mut v, 5, 0x08);
    gc(&mut v, 2, 0x03); // colour 3
    gc(&mut v, 7, 0x0F);
    assert_eq!(v.mem_read(0), 0b1000_0000, "read mode 1: only bit 7 has colour 3");
    gc(&mut v, 7, 0x01); // compare plane 0 only
    assert_eq!(v.mem_read(0), 0b1100_0000);
}

#[test]
fn odd_even_text_memory_and_screen() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01);
    seq(&mut v, 4, 0x02); // odd/even
    gc(&mut v, 6, 0x0E); // B8000, text, chain odd/even
    seq(&mut v, 2, 0x03);
    crtc(&mut v, 0x01, 79);
    crtc(&mut v, 0x09, 15);
    crtc(&mut v, 0x12, 0x8F);
    crtc(&mut v, 0x07, 0x1F); // overflow: VDE bit 8 (bit 1) set, so VDE = 0x18F: 400 lines
    crtc(&mut v, 0x13, 40);
    crtc(&mut v, 0x0A, 0x20); // cursor off
    for (i, b) in b"Hi".iter().enumerate() {
        v.mem_write(0x1_8000 + 2 * i as u64, *b);
        v.mem_write(0x1_8000 + 2 * i as u64 + 1, 0x1E);
    }
    assert_eq!(v.mem_read(0x1_8000), b'H');
    assert_eq!(v.mem_read(0x1_8003), 0x1E);
    assert_eq!(&v.vram[0..8], &[b'H', 0x1E, 0, 0, b'i', 0x1E, 0, 0], "char in plane 0, attribute in plane 1");
    assert_eq!(v.mem_read(0), 0xFF, "A0000 is outside the B8000 map");
    let t = v.text_screen().unwrap();
    assert_eq!((t.cols, t.rows), (80, 25));
    assert!(t.row_text(0).starts_with("Hi  "));
    assert_eq!(t.cells[1], Cell { ch: b'i', attr: 0x1E });
    assert_eq!(t.cursor, None);
}

#[test]
fn mode_13h_render_matches_the_expected_image() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x63);
    seq(&mut v, 1, 0x01);
    seq(&mut v, 4, 0x0E); // chain 4
    seq(&mut v, 2, 0x0F);
    gc(&mut v, 5, 0x40);
    gc(&mut v, 6, 0x05);
    crtc(&mut v, 0x01, 0x4F);
    crtc(&mut v, 0x07, 0x1F);
    crtc(&mut v, 0x09, 0x41); // two lines per row
    crtc(&mut v, 0x12, 0x8F);
    crtc(&mut v, 0x13, 0x28);
    let _ = v.port_read(0, 0x3DA);
    out(&mut v, 0x3C0, 0x30);
    out(&mut v, 0x3C0, 0x41);
    out(&mut v, 0x3C8, 1);
    for c in [0x3F, 0, 0, 0, 0x3F, 0] {
        out(&mut v, 0x3C9, c);
    }
    // Pixel (0,0) red, (319,199) green, through the chained window.
    v.mem_write(0, 1);
    v.mem_write(199 * 320 + 319, 2);
    assert_eq!(v.vram[0], 1);
    let f = v.render();
    assert_eq!((f.width, f.height), (320, 200));
    let mut expect = vec![0u8; 320 * 200 * 3];
    expect[0..3].copy_from_slice(&[0xFF, 0, 0]);
    let last = (199 * 320 + 319) * 3;
    expect[last..last + 3].copy_from_slice(&[0, 0xFF, 0]);
    assert!(f.rgb == expect, "mode 13h frame differs from the expected image");
}

#[test]
fn snapshot_round_trip() {
    let mut v = planar();
    v.mem_write(5, 0x77);
    dispi(&mut v, dispi::XRES as u16, 640);
    let mut w = SnapshotWriter::new();
    v.save(&mut w);
    let buf = w.finish();
    let mut u = Vga::new();
    u.restore(&mut SnapshotReader::new(&buf)).unwrap();
    assert!(u.vram == v.vram);
    assert_eq!(u.gc, v.gc);
    assert_eq!(u.vbe, v.vbe);
    assert!(u.restore(&mut SnapshotReader::new(&buf[..buf.len() / 2])).is_err());
}

#[test]
fn index_registers_mask_and_read_back() {
    let mut v = Vga::new();
    out(&mut v, 0x3C4, 0xFA);
    assert_eq!(v.port_read(0, 0x3C4), 0x02, "sequencer index: 3 bits");
    out(&mut v, 0x3C5, 0x0C);
    assert_eq!(v.port_read(0, 0x3C5), 0x0C);
    assert_eq!(v.seq[2], 0x0C);
    out(&mut v, 0x3CE, 0xF8);
    assert_eq!(v.port_read(0, 0x3CE), 0x08, "graphics index: 4 bits");
    out(&mut v, 0x3CF, 0x5A);
    assert_eq!(v.gc[8], 0x5A, "bit mask");
    out(&mut v, 0x3C2, 0x01);
    out(&mut v, 0x3D4, 0xFF);
    assert_eq!(v.port_read(0, 0x3D4), 0x1F, "CRTC index: 5 bits");
    assert_eq!(v.port_read(0, 0x3CC), 0x01, "misc output reads back at 3CC");
    out(&mut v, 0x3DA, 0x05);
    assert_eq!(v.port_read(0, 0x3CA), 0x05, "feature control reads back at 3CA");
    assert_eq!(v.port_read(0, 0x3C2) & 0x10, 0x10, "input status 0: switch sense");
}

#[test]
fn write_mode_0_rotate_and_logical_functions() {
    let mut v = planar();
    // Rotate right by 1 with function "replace": 0x81 -> 0xC0 in every plane.
    gc(&mut v, 3, 1);
    v.mem_write(0, 0x81);
    assert_eq!(&v.vram[0..4], &[0xC0; 4]);
    // AND, OR with latches 0xF0 in every plane.
    v.vram[4..8].copy_from_slice(&[0xF0; 4]);
    for (func, want) in [(1u8, 0x30u8), (2, 0xFC), (3, 0xCC)] {
        v.vram[4..8].copy_from_slice(&[0xF0; 4]);
        let _ = v.mem_read(1);
        gc(&mut v, 3, func << 3);
        v.mem_write(1, 0x3C);
        assert_eq!(&v.vram[4..8], &[want; 4], "function {func}");
    }
    // Set/reset with enable overrides the data in the enabled planes, after rotation of the rest.
    gc(&mut v, 3, 2);
    gc(&mut v, 1, 0x0A);
    gc(&mut v, 0, 0x02);
    v.mem_write(2, 0x04);
    assert_eq!(&v.vram[8..12], &[0x01, 0xFF, 0x01, 0x00]);
}

#[test]
fn chain_4_addresses_bytes_and_honours_the_map_mask() {
    let mut v = Vga::new();
    seq(&mut v, 4, 0x0E);
    gc(&mut v, 6, 0x05);
    seq(&mut v, 2, 0x0F);
    for a in 0..8u64 {
        v.mem_write(a, 0x10 + a as u8);
    }
    assert_eq!(
        &v.vram[0..8],
        &[0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17],
        "byte address = video memory offset"
    );
    seq(&mut v, 2, 0x05); // planes 0 and 2 only
    for a in 0..4u64 {
        v.mem_write(a, 0xEE);
    }
    assert_eq!(&v.vram[0..4], &[0xEE, 0x11, 0xEE, 0x13], "plane = address & 3 must be in the map mask");
    assert_eq!(v.mem_read(1), 0x11);
    // Memory map 1 decodes only A0000-AFFFF.
    assert_eq!(v.mem_read(0x1_0000), 0xFF);
}

#[test]
fn odd_even_read_map_selects_the_plane_pair() {
    let mut v = Vga::new();
    seq(&mut v, 4, 0x02);
    gc(&mut v, 6, 0x02); // odd/even, 128 KiB map
    v.vram[0..4].copy_from_slice(&[0xA0, 0xA1, 0xA2, 0xA3]);
    assert_eq!(v.mem_read(0), 0xA0);
    assert_eq!(v.mem_read(1), 0xA1);
    gc(&mut v, 4, 0x02);
    assert_eq!(v.mem_read(0), 0xA2, "read map bit 1 picks planes 2/3");
    assert_eq!(v.mem_read(1), 0xA3);
    seq(&mut v, 2, 0x04);
    v.mem_write(0, 0x55);
    v.mem_write(1, 0x66);
    assert_eq!(&v.vram[0..4], &[0xA0, 0xA1, 0x55, 0xA3], "plane 3 not in the map mask");
}

/// An 80x25 text set-up with the given CRTC start address and offset.
fn text_with(start: u16, offset: u8) -> Vga {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01);
    seq(&mut v, 4, 0x02);
    gc(&mut v, 6, 0x0E);
    seq(&mut v, 2, 0x03);
    crtc(&mut v, 0x01, 79);
    crtc(&mut v, 0x09, 15);
    crtc(&mut v, 0x12, 0x8F);
    crtc(&mut v, 0x07, 0x1F);
    crtc(&mut v, 0x13, offset);
    crtc(&mut v, 0x0C, (start >> 8) as u8);
    crtc(&mut v, 0x0D, start as u8);
    crtc(&mut v, 0x0E, (start >> 8) as u8);
    crtc(&mut v, 0x0F, (start as u8).wrapping_add(3));
    crtc(&mut v, 0x0A, 0x0E);
    for i in 0..4000u64 {
        v.mem_write(0x1_8000 + 2 * i, b'A' + (i / 80) as u8 % 26);
        v.mem_write(0x1_8000 + 2 * i + 1, 0x07);
    }
    v
}

#[test]
fn crtc_start_address_and_offset_move_the_screen() {
    let t = text_with(0, 40).text_screen().unwrap();
    assert!(t.row_text(0).starts_with("AAAA") && t.row_text(1).starts_with("BBBB"));
    assert_eq!(t.cursor, Some((3, 0)), "cursor location 3 relative to the start");
    let t = text_with(80, 40).text_screen().unwrap();
    assert!(t.row_text(0).starts_with("BBBB"), "start address one row on: scrolled");
    assert_eq!(t.cursor, Some((3, 0)));
    // Offset 41: rows 82 cells apart, so row 1 starts at cell 82 (row B, column 2) .
    let t = text_with(0, 41).text_screen().unwrap();
    assert_eq!(&t.row_text(1)[..80], &format!("{}{}", "B".repeat(78), "CC"));
}

#[test]
fn attribute_controller_palette_colour_select_and_blanking() {
    let mut v = Vga::new();
    let _ = v.port_read(0, 0x3DA); // flip-flop to index
    out(&mut v, 0x3C0, 0x03); // palette 3 (PAS clear: palette access)
    out(&mut v, 0x3C0, 0xFF);
    assert_eq!(v.ar[3], 0x3F, "palette registers are 6 bits");
    assert_eq!(v.port_read(0, 0x3C1), 0x3F, "data reads back at 3C1");
    out(&mut v, 0x3C0, 0x14);
    out(&mut v, 0x3C0, 0x0B);
    assert_eq!(v.attr_to_dac(3), 0x3F | 0x80, "colour select bits 3:2 give DAC bits 7:6");
    out(&mut v, 0x3C0, 0x10);
    out(&mut v, 0x3C0, 0x80); // P5:4 select
    assert_eq!(v.attr_to_dac(3), 0x0F | 0xB0, "with P54S, colour select 3:0 give DAC bits 7:4");
    assert_eq!(v.render().rgb.iter().filter(|&&b| b != 0).count(), 0, "palette access blanks the screen");
    assert_eq!(v.port_read(0, 0x3C0), 0x10, "index with PAS clear");
    out(&mut v, 0x3C0, 0x20);
    assert_eq!(v.port_read(0, 0x3C0), 0x20, "PAS set");
    // With PAS set, the flip-flop is at data: writing toggles it back.
    assert!(v.ar_flip);
}

#[test]
fn dac_indices_auto_increment_wrap_and_pel_mask() {
    let mut v = Vga::new();
    out(&mut v, 0x3C8, 0xFF);
    for c in [1, 2, 3, 4, 5, 6] {
        out(&mut v, 0x3C9, c);
    }
    assert_eq!(v.port_read(0, 0x3C8), 1, "write index wrapped from 255 to 0, then 1");
    assert_eq!(&v.dac[255 * 3..], &[1, 2, 3]);
    assert_eq!(&v.dac[0..3], &[4, 5, 6]);
    out(&mut v, 0x3C7, 0xFF);
    let got: Vec<u8> = (0..6).map(|_| v.port_read(0, 0x3C9)).collect();
    assert_eq!(got, [1, 2, 3, 4, 5, 6], "read index auto-increments and wraps");
    // A new index restarts the component sequence.
    out(&mut v, 0x3C8, 0x10);
    out(&mut v, 0x3C9, 0x3F);
    out(&mut v, 0x3C8, 0x10);
    for c in [7, 8, 9] {
        out(&mut v, 0x3C9, c);
    }
    assert_eq!(&v.dac[0x30..0x33], &[7, 8, 9]);
    // The pel mask ANDs the index: 0x13 & 0x0F = 3.
    out(&mut v, 0x3C8, 0x03);
    for c in [0x3F, 0, 0] {
        out(&mut v, 0x3C9, c);
    }
    out(&mut v, 0x3C6, 0x0F);
    assert_eq!(v.dac_rgb(0x13), [0xFF, 0, 0]);
    assert_eq!(v.port_read(0, 0x3C6), 0x0F);
}

#[test]
fn retrace_bits_over_a_whole_frame() {
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0x01);
    let (mut vr, mut hb) = (0u64, 0u64);
    let step = 1_000;
    for t in (0..FRAME_NS).step_by(step as usize) {
        let s = v.port_read(3 * FRAME_NS + t, 0x3DA);
        assert_eq!(s & !0x09, 0, "only bits 0 and 3");
        if s & 0x08 != 0 {
            vr += step;
            assert_eq!(s & 1, 1, "display disabled during vertical retrace");
        } else if s & 1 != 0 {
            hb += step;
        }
    }
    assert_eq!(vr, VRETRACE_NS);
    let lines = (FRAME_NS - VRETRACE_NS) / LINE_NS;
    assert!(hb.abs_diff(lines * HBLANK_NS) <= lines * step, "horizontal blanking {hb} ns in {lines} lines");
    assert_eq!(v.port_read(0, 0x3BA), 0xFF, "mono status port silent in colour mode");
}

/// The 16 colours of the standard palette (the VGA BIOS's mode 12h DAC as 8-bit values).
const CGA: [[u8; 3]; 16] = [
    [0x00, 0x00, 0x00],
    [0x00, 0x00, 0xAA],
    [0x00, 0xAA, 0x00],
    [0x00, 0xAA, 0xAA],
    [0xAA, 0x00, 0x00],
    [0xAA, 0x00, 0xAA],
    [0xAA, 0x55, 0x00],
    [0xAA, 0xAA, 0xAA],
    [0x55, 0x55, 0x55],
    [0x55, 0x55, 0xFF],
    [0x55, 0xFF, 0x55],
    [0x55, 0xFF, 0xFF],
    [0xFF, 0x55, 0x55],
    [0xFF, 0x55, 0xFF],
    [0xFF, 0xFF, 0x55],
    [0xFF, 0xFF, 0xFF],
];

#[test]
fn mode_12h_render_matches_the_expected_image() {
    // The mode 12h register set (640x480, 16 colours, planar), as the IBM VGA BIOS programs it.
    let mut v = Vga::new();
    out(&mut v, 0x3C2, 0xE3);
    for (i, r) in [0x03u8, 0x01, 0x0F, 0x00, 0x06].iter().enumerate() {
        seq(&mut v, i as u8, *r);
    }
    crtc(&mut v, 0x11, 0x00); // unprotect CR00-07
    let crtc_regs = [
        0x5Fu8, 0x4F, 0x50, 0x82, 0x54, 0x80, 0x0B, 0x3E, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0xEA, 0x8C, 0xDF, 0x28, 0x00, 0xE7, 0x04, 0xE3, 0xFF,
    ];
    for (i, r) in crtc_regs.iter().enumerate() {
        crtc(&mut v, i as u8, *r);
    }
    for (i, r) in [0x00u8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x0F, 0xFF].iter().enumerate() {
        gc(&mut v, i as u8, *r);
    }
    let ar = [
        0x00u8, 0x01, 0x02, 0x03, 0x04, 0x05, 0x14, 0x07, 0x38, 0x39, 0x3A, 0x3B, 0x3C, 0x3D, 0x3E, 0x3F,
        0x01, 0x00, 0x0F, 0x00, 0x00,
    ];
    let _ = v.port_read(0, 0x3DA);
    for (i, r) in ar.iter().enumerate() {
        out(&mut v, 0x3C0, i as u8);
        out(&mut v, 0x3C0, *r);
    }
    out(&mut v, 0x3C0, 0x20); // palette access off: display on
    // The DAC entries the palette points at, in 6-bit values.
    for (c, idx) in ar[..16].iter().enumerate() {
        out(&mut v, 0x3C8, *idx);
        for comp in CGA[c] {
            out(&mut v, 0x3C9, comp >> 2);
        }
    }
    // Sixteen 40-pixel stripes of colours 0-15 (write mode 2), then a diagonal of colour 15 with the
    // bit mask choosing the pixel (write mode 2 with one bit, so the latches keep the stripe).
    gc(&mut v, 5, 0x02);
    for y in 0..480u64 {
        for xb in 0..80u64 {
            v.mem_write(y * 80 + xb, (xb / 5) as u8);
        }
    }
    for y in 0..480u64 {
        let x = y;
        gc(&mut v, 8, 0x80 >> (x % 8));
        let _ = v.mem_read(y * 80 + x / 8);
        v.mem_write(y * 80 + x / 8, 0x0F);
    }
    let f = v.render();
    assert_eq!((f.width, f.height), (640, 480));
    let mut expect = Vec::with_capacity(640 * 480 * 3);
    for y in 0..480 {
        for x in 0..640 {
            let c = if x == y { 15 } else { x / 40 };
            expect.extend_from_slice(&CGA[c]);
        }
    }
    let bad = f.rgb.chunks(3).zip(expect.chunks(3)).position(|(a, b)| a != b);
    assert!(
        bad.is_none(),
        "mode 12h frame differs from the expected image at pixel {:?}",
        bad.map(|p| (p % 640, p / 640))
    );
}
