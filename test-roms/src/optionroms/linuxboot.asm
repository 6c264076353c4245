; linuxboot: the option ROM that boots the kernel fw_cfg carries when a BIOS runs with --kernel, as
; QEMU's linuxboot_dma.bin does for its -kernel with firmware. SeaBIOS finds it as the fw_cfg file
; `genroms/linuxboot.bin`, copies it below 1 MiB, calls its init entry (which only returns) and, because
; its PnP header has a boot entry vector (BEV), adds it to the boot menu; the machine's `bootorder` file
; puts it first. At boot SeaBIOS jumps to the BEV, which
;
;   1. reads the addresses and sizes the machine put in fw_cfg (SETUP_*, KERNEL_*, INITRD_*, CMDLINE_*)
;      through the selector and data ports, little-endian;
;   2. has fw_cfg's DMA interface copy the real-mode setup code, the protected-mode kernel, the initrd
;      and the command line to those addresses (DMA reaches any physical address, so real mode is enough;
;      the descriptor lives in low RAM at DMA_DESC, since the shadowed ROM is read-only by now);
;   3. enters the kernel's real-mode setup code as the Linux boot protocol says: all data segments at the
;      setup segment, the stack at the top of the setup heap, a far jump to setup segment + 0x20, offset 0.
;
; The machine patched the setup header already (loader type, command line pointer, heap end, initrd).
; A failed DMA transfer prints a message through INT 10h and halts.
;
; The ROM's last byte is the checksum byte: `firmware::linuxboot::rom()` sets it so the bytes sum to zero,
; and the PnP header's checksum likewise.

BITS 16
ORG 0

FW_CFG_CTL      equ 0x510
FW_CFG_DATA     equ 0x511
FW_CFG_DMA_HI   equ 0x514
FW_CFG_DMA_LO   equ 0x518

KEY_INITRD_ADDR  equ 0x0a
KEY_INITRD_SIZE  equ 0x0b
KEY_KERNEL_ADDR  equ 0x07
KEY_KERNEL_SIZE  equ 0x08
KEY_KERNEL_DATA  equ 0x11
KEY_INITRD_DATA  equ 0x12
KEY_CMDLINE_ADDR equ 0x13
KEY_CMDLINE_SIZE equ 0x14
KEY_CMDLINE_DATA equ 0x15
KEY_SETUP_ADDR   equ 0x16
KEY_SETUP_SIZE   equ 0x17
KEY_SETUP_DATA   equ 0x18

DMA_SELECT      equ 0x08
DMA_READ        equ 0x02
DMA_ERROR       equ 0x01

DMA_DESC        equ 0x6f00          ; 16-byte DMA descriptor in low RAM (segment 0)
STACK_TOP       equ 0x6f00

ROM_SIZE        equ 1024

rom_start:
    db 0x55, 0xAA
    db ROM_SIZE / 512
    jmp init                        ; offset 3: the init entry
    times 0x18 - ($ - $$) db 0
    dw 0                            ; 0x18: no PCI data structure (not a PCI ROM)
    dw pnp - rom_start              ; 0x1A: the PnP expansion header

    align 16
pnp:
    db '$PnP'
    db 1                            ; structure revision
    db 2                            ; length in 16-byte units
    dw 0                            ; next header: none
    db 0                            ; reserved
    db 0                            ; checksum of the 32 bytes: set by firmware::linuxboot::rom()
    dd 0                            ; device identifier
    dw 0                            ; manufacturer string: none
    dw name - rom_start             ; product name: SeaBIOS shows it in its boot menu
    db 0x02, 0x80, 0x00             ; device type: mass storage, other
    db 0x00                         ; device indicators
    dw 0                            ; boot connection vector: none
    dw 0                            ; disconnect vector: none
    dw bev - rom_start              ; boot entry vector
    dw 0                            ; reserved
    dw 0                            ; static resource information vector: none

name:
    db 'Linux (fw_cfg kernel)', 0
fail_msg:
    db 'linuxboot: fw_cfg DMA failed', 13, 10, 0

init:
    retf

; The boot entry: never returns.
bev:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, STACK_TOP

    mov ax, KEY_SETUP_ADDR
    call read32
    push eax                        ; [sp+4 after the next push]: setup address
    mov ax, KEY_CMDLINE_ADDR
    call read32
    push eax                        ; command line address

    mov si, copies
.next:
    cs lodsw                        ; address key (0 ends the list)
    test ax, ax
    jz .copied
    call read32
    mov edi, eax
    cs lodsw                        ; size key
    call read32
    mov ecx, eax
    cs lodsw                        ; data key
    call dma_read
    jmp .next
.copied:
    pop edx                         ; command line address
    pop eax                         ; setup address
    sub edx, eax
    sub edx, 0x10                   ; the stack: just below the command line, inside the setup segment
    shr eax, 4
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax
    mov ss, ax
    mov sp, dx
    add ax, 0x20
    push ax
    push word 0
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    retf                            ; to the setup code's entry, setup segment + 0x20 : 0

; What to copy: (address key, size key, data key) triples, ended by 0.
copies:
    dw KEY_SETUP_ADDR, KEY_SETUP_SIZE, KEY_SETUP_DATA
    dw KEY_KERNEL_ADDR, KEY_KERNEL_SIZE, KEY_KERNEL_DATA
    dw KEY_INITRD_ADDR, KEY_INITRD_SIZE, KEY_INITRD_DATA
    dw KEY_CMDLINE_ADDR, KEY_CMDLINE_SIZE, KEY_CMDLINE_DATA
    dw 0

; eax = the 32-bit little-endian fw_cfg item `ax`. Clobbers ebx, dx.
read32:
    mov dx, FW_CFG_CTL
    out dx, ax
    mov dx, FW_CFG_DATA
    xor ebx, ebx
    in al, dx
    mov bl, al
    in al, dx
    mov bh, al
    in al, dx
    ror ebx, 16
    mov bl, al
    in al, dx
    mov bh, al
    rol ebx, 16
    mov eax, ebx
    ret

; Copies `ecx` bytes of fw_cfg item `ax` to physical address `edi` through the DMA interface (nothing for
; ecx = 0). Clobbers eax, ecx, edx, edi.
dma_read:
    jecxz .done
    movzx eax, ax
    shl eax, 16
    or eax, DMA_SELECT | DMA_READ
    bswap eax
    mov [DMA_DESC], eax             ; control (big-endian)
    bswap ecx
    mov [DMA_DESC + 4], ecx         ; length
    mov dword [DMA_DESC + 8], 0     ; address, high half
    bswap edi
    mov [DMA_DESC + 12], edi        ; address, low half
    xor eax, eax
    mov dx, FW_CFG_DMA_HI
    out dx, eax
    mov eax, DMA_DESC
    bswap eax
    mov dx, FW_CFG_DMA_LO
    out dx, eax                     ; starts the transfer
.wait:
    mov eax, [DMA_DESC]
    bswap eax
    test eax, eax
    jz .done                        ; the device clears the control word when done
    test al, DMA_ERROR
    jnz fail
    jmp .wait
.done:
    ret

fail:
    mov si, fail_msg
.print:
    cs lodsb
    test al, al
    jz .halt
    mov ah, 0x0e
    mov bx, 0x0007
    int 0x10
    jmp .print
.halt:
    hlt
    jmp .halt

    times ROM_SIZE - ($ - $$) db 0
