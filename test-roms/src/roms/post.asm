; post: a POST-style walk through the 386's modes that prints its ALU results on COM1, for a
; byte-exact comparison with the host CPU (test-roms/tests/post.rs runs every case natively).
;
; The walk, with a POST code on port 0x80 at each step as a BIOS would:
;   01 real mode: the ALU cases of post_cases.inc as 16-bit code, results to 1000:0000;
;   02 32-bit protected mode (flat, ring 0): the same cases as 32-bit code, results to 0x20000;
;   03 paging (386 two-level tables, 4 KiB pages): #PF on a read and on a write of a not-present
;      page (error code, CR2, faulting EIP);
;   04 a task switch (JMP to a TSS whose EFLAGS has VM=1) into a virtual-8086 task that runs the
;      16-bit cases again (results to 3000:0000) and returns by INT 20h through a DPL3 task gate: a
;      second task switch, nested (EFLAGS.NT, back link, the v86 TSS left busy);
;   05 the checks on the saved v86 state;
;   06 the results on COM1, one line per case: "<mode> <index> <eax> <ebx> <ecx> <edx> <flags>",
;      mode R, P or V, index 3 decimal digits, the rest 8 hex digits, flags masked to CF PF AF ZF SF OF.
; The PASS/FAIL lines on the debug console cover the walk itself (so the ROM also passes under QEMU,
; where the ALU lines are not compared: QEMU's undefined flags differ from this host's CPU).
;
; A case: EAX..EDX and the arithmetic flags loaded, one instruction, the four registers and EFLAGS
; stored at ES:EDI (20 bytes). Expectations: Intel SDM Vol. 3A 7.3 (task switching: CR3 is read from,
; never written to, the TSS; the old task's TSS gets the state and a JMP clears its busy bit, an INT
; through a task gate sets NT and the back link), 7.2.3 (busy flag), 20.2.1/20.2.5 (entering v86 by a
; task switch), 6.12.2 (interrupt task gates), 4.3/4.7 (32-bit paging, #PF error code bits P, W/R, U/S).
%include "common.inc"
%include "sys.inc"

REC_SIZE  equ 20
REAL_BUF  equ 0x10000           ; 1000:0000
PROT_BUF  equ 0x20000
V86_BUF   equ 0x30000           ; 3000:0000
PD_ADDR   equ 0x50000
PT_ADDR   equ 0x51000
V86_TSS   equ 0x58000
HOLE      equ 0x60000           ; the not-present page
COM1      equ 0x3F8
SEL_V86TSS equ SEL_FIRST

%macro POST 1
        mov al, %1
        out 0x80, al
%endmacro

; The ROM's CASE: load, run, record (see post_cases.inc). Works as 16- and 32-bit code.
%assign ncases 0
%macro CASE 6
        mov eax, %2
        mov ebx, %3
        mov ecx, %4
        mov edx, %5
        push dword (%6) | 2
        popfd
        %1
        pushfd
        call rec
 %assign ncases ncases + 1
%endmacro

rom_start:
        INIT16
        RESET_GUARD
        RM_IVT_INIT
        POST 0x01
        push word REAL_BUF >> 4
        pop es
        xor edi, edi
        call alu16
        CHECK16 edi, NCASES * REC_SIZE, "real mode: every case recorded"
        PM32_ENTER xgdt, xgdt_end, pm_main
xgdt:
        DESC V86_TSS, 0x67, 0x89, 0x0   ; SEL_V86TSS: 32-bit TSS (available), no I/O bitmap
xgdt_end:

; ---------------------------------------------------------------- 16-bit code (real mode and v86)
        bits 16
; rec (16-bit): [sp] = return address, [sp+2] = EFLAGS after the case.
rec16:
        mov [es:edi], eax
        mov [es:edi + 4], ebx
        mov [es:edi + 8], ecx
        mov [es:edi + 12], edx
        pop bx
        pop eax
        mov [es:edi + 16], eax
        add edi, REC_SIZE
        jmp bx

alu16:
%define rec rec16
%include "post_cases.inc"
%undef rec
NCASES equ ncases
        ret

v86_entry:                              ; the v86 task starts here (ES:EDI = 3000:0000)
        call alu16
        int 0x20                        ; task gate back to the main task
        jmp v86_entry                   ; not reached (the task is never resumed)

; ---------------------------------------------------------------- 32-bit code
        bits 32
; rec (32-bit): [esp] = return address, [esp+4] = EFLAGS after the case.
rec32:
        mov [es:edi], eax
        mov [es:edi + 4], ebx
        mov [es:edi + 8], ecx
        mov [es:edi + 12], edx
        pop ebx
        pop eax
        mov [es:edi + 16], eax
        add edi, REC_SIZE
        jmp ebx

alu32:
%define rec rec32
%include "post_cases.inc"
%undef rec
        ret

pm_main:
        POST 0x02
        mov edi, PROT_BUF
        call alu32
        CHECK32 edi, PROT_BUF + NCASES * REC_SIZE, "protected mode: every case recorded"

        ; ---- 03: paging, identity-mapped first 4 MiB except the hole
        POST 0x03
        cld
        mov edi, PD_ADDR
        xor eax, eax
        mov ecx, 1024
        rep stosd
        mov dword [PD_ADDR], PT_ADDR | 7  ; user pages: the v86 task runs at CPL 3
        mov edi, PT_ADDR
        mov eax, 7
        mov ecx, 1024
.pt:    stosd
        add eax, 0x1000
        loop .pt
        mov dword [PT_ADDR + (HOLE >> 12) * 4], 0
        mov eax, PD_ADDR
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        jmp .paged
.paged:
        TRY .pf_read
.pf_read_insn:
        mov eax, [HOLE + 0x123]
.pf_read:
        ENDTRY
        EXPECT_EXC 14, 0, .pf_read_insn, "paging: read of a not-present page"
        CHECK32 [EXC_CR2], HOLE + 0x123, "paging: read fault CR2"
        TRY .pf_write
.pf_write_insn:
        mov dword [HOLE + 0xFFC], 1
.pf_write:
        ENDTRY
        EXPECT_EXC 14, 2, .pf_write_insn, "paging: write to a not-present page"
        CHECK32 [EXC_CR2], HOLE + 0xFFC, "paging: write fault CR2"

        ; ---- 04: task switch into a v86 task
        POST 0x04
        mov edi, V86_TSS
        xor eax, eax
        mov ecx, 0x68 / 4
        rep stosd
        mov dword [V86_TSS + 0x04], RING0_STACK
        mov dword [V86_TSS + 0x08], SEL_DATA0
        mov dword [V86_TSS + 0x1C], PD_ADDR             ; CR3
        mov dword [V86_TSS + 0x20], v86_entry - 0xF0000 ; EIP
        mov dword [V86_TSS + 0x24], FL_VM | FL_IOPL3 | 2
        mov dword [V86_TSS + 0x38], 0x7FF0              ; ESP
        mov dword [V86_TSS + 0x48], V86_BUF >> 4        ; ES
        mov dword [V86_TSS + 0x4C], 0xF000              ; CS
        mov dword [V86_TSS + 0x50], 0x0800              ; SS
        mov word [V86_TSS + 0x66], 0x68                 ; I/O map base past the limit: no bitmap
        mov dword [TSS_ADDR + 0x1C], PD_ADDR            ; the main task's CR3 (never written by the CPU)
        ; INT 20h: a task gate (DPL3) to the main task
        mov word [IDT_ADDR + 0x20 * 8], 0
        mov word [IDT_ADDR + 0x20 * 8 + 2], SEL_TSS
        mov word [IDT_ADDR + 0x20 * 8 + 4], 0xE500
        mov word [IDT_ADDR + 0x20 * 8 + 6], 0
        jmp SEL_V86TSS:0
        ; ---- 05: back from the v86 task
        POST 0x05
        mov ax, SEL_DATA0
        mov ds, ax
        mov es, ax
        str eax
        CHECK32 eax, SEL_TSS, "task switch: TR is the main task again"
        pushfd
        pop eax
        and eax, FL_NT
        CHECK32 eax, FL_NT, "task switch: INT through a task gate sets NT"
        movzx eax, word [TSS_ADDR]
        CHECK32 eax, SEL_V86TSS, "task switch: back link to the v86 task"
        movzx eax, byte [GDT_ADDR + SEL_V86TSS + 5]
        CHECK32 eax, 0x8B, "task switch: the v86 TSS stays busy"
        movzx eax, byte [GDT_ADDR + SEL_TSS + 5]
        CHECK32 eax, 0x8B, "task switch: the main TSS is busy again"
        mov eax, [V86_TSS + 0x24]
        and eax, FL_VM | FL_IOPL3
        CHECK32 eax, FL_VM | FL_IOPL3, "task switch: saved v86 EFLAGS has VM and IOPL"
        movzx eax, word [V86_TSS + 0x4C]
        CHECK32 eax, 0xF000, "task switch: saved v86 CS"
        mov eax, [V86_TSS + 0x44]
        CHECK32 eax, NCASES * REC_SIZE, "v86: every case recorded"
        pushfd
        and dword [esp], ~FL_NT
        popfd

        ; ---- 06: the results on COM1
        POST 0x06
        mov bl, 'R'
        mov esi, REAL_BUF
        call print_recs
        mov bl, 'P'
        mov esi, PROT_BUF
        call print_recs
        mov bl, 'V'
        mov esi, V86_BUF
        call print_recs
        POST 0x07
        jmp finish32

; print_recs: BL = mode letter, ESI = the records. Clobbers EAX, ECX, EDX, ESI, EBP.
print_recs:
        xor ebp, ebp
.line:  cmp ebp, NCASES
        jae .done
        mov al, bl
        call com1_putc
        mov al, ' '
        call com1_putc
        mov eax, ebp                    ; index: three decimal digits
        mov cl, 100
        div cl
        add al, '0'
        call com1_putc
        mov al, ah
        xor ah, ah
        mov cl, 10
        div cl
        push eax
        add al, '0'
        call com1_putc
        pop eax
        mov al, ah
        add al, '0'
        call com1_putc
        mov ecx, 5
.field: mov al, ' '
        call com1_putc
        lodsd
        cmp ecx, 1
        jne .hex
        and eax, FL_ARITH
.hex:   call com1_hex32
        loop .field
        mov al, 10
        call com1_putc
        inc ebp
        jmp .line
.done:  ret

; com1_hex32: EAX as 8 hex digits on COM1. Preserves registers.
com1_hex32:
        push eax
        push ecx
        push edx
        mov edx, eax
        mov ecx, 8
.d:     rol edx, 4
        mov al, dl
        and al, 0x0F
        add al, '0'
        cmp al, '9'
        jbe .o
        add al, 'a' - '9' - 1
.o:     call com1_putc
        loop .d
        pop edx
        pop ecx
        pop eax
        ret

; com1_putc: AL on COM1 (waits, boundedly, for the transmitter). Preserves registers.
com1_putc:
        push eax
        push ecx
        push edx
        mov ah, al
        mov dx, COM1 + 5
        mov ecx, 100000
.w:     in al, dx
        test al, 0x20
        loopz .w
        mov al, ah
        mov dx, COM1
        out dx, al
        pop edx
        pop ecx
        pop eax
        ret

%include "reset.inc"
