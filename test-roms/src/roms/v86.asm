; v86: virtual-8086 mode (CR4.VME=0).
;
; Entered by IRETD with EFLAGS.VM=1 from the 32-bit ring-0 task (frame EIP/CS/EFLAGS/ESP/SS/ES/DS/FS/
; GS); the v86 code runs straight from the ROM at F000:xxxx. Covers real-mode style addressing
; (seg*16+off), IOPL=3 letting CLI/STI/PUSHF/POPF run (PUSHFD image with VM=0), IOPL<3 making
; CLI/STI/PUSHF/POPF/IRET/INT n/HLT raise #GP(0) to a ring-0 monitor that checks the error code, sees
; VM=1 in the pushed EFLAGS, decodes the opcode at CS*16+IP, skips it and IRETs back; IN/OUT checked
; against the TSS I/O bitmap and not against IOPL (allowed port with IOPL=0, denied port with IOPL=3);
; INT n with IOPL=3 through a DPL3 32-bit interrupt gate to ring 0 (frame with the v86 segment
; registers, DS/ES/FS/GS zero in the handler, VM cleared inside, IRETD back restores the v86
; segments), INT n with IOPL=3 through a DPL0 gate -> #GP(n*8+2); an exception (#DE) from v86 (pushed
; EFLAGS.VM=1, CS:IP, SS:SP); and the return to protected mode through a #GP-trapped INT 20h that the
; monitor turns into a jump back to the 32-bit test code.
;
; Expectations from the Intel SDM Vol. 3A 20.2 (v86 mode: entering via IRET/task switch, address
; translation, I/O), 20.2.7-20.2.8 (sensitive instructions, I/O bitmap in v86 regardless of IOPL),
; 20.3 (interrupt and exception handling in v86: Figure 20-2 stack frame, segment registers cleared,
; IOPL-sensitive INT n -> #GP(0), Table 20-2), 6.12.1 (gate DPL checks for INT n); Vol. 2 "IRET"
; (return to v86), "PUSHF" (VM and RF cleared in the image), "CLI"/"STI" (#GP(0) at IOPL<CPL).
%include "common.inc"
%include "sys.inc"

MON_COUNT  equ 0x9000
MON_ERR    equ 0x9004
MON_ERROR_OR equ 0x9008
MON_EFL    equ 0x900C
MON_RESUME equ 0x9010
MON_SAVESP equ 0x9014
MON_LOG    equ 0x9020   ; one byte per trapped instruction
H31        equ 0x9080   ; INT 31h handler records (dwords)
VREC       equ 0x9100   ; v86 program records (0000:9100)

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt, pm_main
xgdt:

; ---------------------------------------------------------------- v86 programs (16-bit, CS=F000)
        bits 16
v86_prog1:                                      ; IOPL=3
        mov ax, cs
        mov [VREC + 0], ax
        mov ax, 0x1000
        mov ds, ax
        mov word [0x10], 0x5A5A                 ; 0x10010
        xor ax, ax
        mov ds, ax
        cli
        sti
        cli
        pushf
        pop ax
        mov [VREC + 2], ax
        pushfd
        pop eax
        mov [VREC + 4], eax
        push word 0x3202
        popf
        pushf
        pop ax
        mov [VREC + 8], ax
        cli
        mov [VREC + 10], sp
        int 0x20                                ; gate DPL0: #GP(0x102) -> monitor exit

v86_prog2:                                      ; IOPL=0: everything sensitive traps
        cli
        sti
        pushf
        popf
        iret
        int 0x21
        hlt
        int 0x20

v86_prog3:                                      ; IOPL=0: I/O bitmap (0x80 allowed)
        in al, 0x80
        out 0x80, al
        in al, 0x81
        mov dx, 0x80
        in al, dx
        mov dx, 0x81
        out dx, al
        int 0x20

v86_prog4:                                      ; IOPL=3: bitmap still applies
        in al, 0x80
        in al, 0x81
        int 0x20

v86_prog5:                                      ; IOPL=3: INT 31h through a DPL3 gate
        mov ax, 0x1234
        mov es, ax
        mov ax, 0x2345
        mov ds, ax
        mov ax, 0x3456
        mov fs, ax
        int 0x31
v86_prog5_ret:
        mov ax, es
        xor bx, bx
        mov ds, bx
        mov [VREC + 0], ax
        mov ax, fs
        mov [VREC + 2], ax
        int 0x20

v86_prog6:                                      ; #DE in v86
        xor bx, bx
v86_prog6_div:
        div bx
        int 0x20

; ---------------------------------------------------------------- 32-bit monitor
        bits 32
; #GP handler for v86: [esp] err, eip, cs, eflags, esp, ss, es, ds, fs, gs
v86_monitor:
        push eax
        push ebx
        mov ax, SEL_DATA0
        mov ds, ax
        mov es, ax
        mov eax, [esp + 8]
        mov [MON_ERR], eax
        or [MON_ERROR_OR], eax
        mov eax, [esp + 20]
        mov [MON_EFL], eax
        test eax, FL_VM
        jz .not_v86
        movzx ebx, word [esp + 16]
        shl ebx, 4
        add ebx, [esp + 12]                     ; linear CS*16 + IP
        movzx eax, byte [ebx]
        push ebx
        mov ebx, [MON_COUNT]
        mov [MON_LOG + ebx], al
        pop ebx
        inc dword [MON_COUNT]
        cmp al, 0xCD
        jne .one
        cmp byte [ebx + 1], 0x20
        je .exit
        add dword [esp + 12], 2                 ; INT n
        jmp .done
.one:   cmp al, 0xE4
        je .two
        cmp al, 0xE6
        je .two
        inc dword [esp + 12]                    ; CLI/STI/PUSHF/POPF/IRET/HLT/IN-OUT DX
        jmp .done
.two:   add dword [esp + 12], 2
.done:  pop ebx
        pop eax
        add esp, 4
        iretd
.exit:  mov ax, SEL_DATA0
        mov fs, ax
        mov gs, ax
        mov ss, ax
        mov esp, [MON_SAVESP]
        jmp [MON_RESUME]
.not_v86:
        pop ebx
        pop eax
        jmp pm_stubs + 13 * 16                  ; not from v86: the recording stub (error code pushed)

; INT 31h handler (DPL3 interrupt gate): [esp] eip, cs, eflags, esp, ss, es, ds, fs, gs
v86_int31:
        mov [ss:H31 + 0], ds
        mov [ss:H31 + 4], es
        mov [ss:H31 + 8], fs
        mov [ss:H31 + 12], gs
        push eax
        mov eax, [esp + 4]
        mov [ss:H31 + 16], eax
        mov eax, [esp + 8]
        mov [ss:H31 + 20], eax
        mov eax, [esp + 12]
        mov [ss:H31 + 24], eax
        mov eax, [esp + 16]
        mov [ss:H31 + 28], eax
        mov eax, [esp + 20]
        mov [ss:H31 + 32], eax
        mov eax, [esp + 24]
        mov [ss:H31 + 36], eax
        mov eax, [esp + 28]
        mov [ss:H31 + 40], eax
        mov eax, [esp + 32]
        mov [ss:H31 + 44], eax
        pushfd
        pop eax
        mov [ss:H31 + 48], eax
        pop eax
        iretd

; V86RUN prog, iopl-bits: run a v86 program until it executes INT 20h (trapped to the monitor)
%macro V86RUN 2
        mov dword [MON_COUNT], 0
        mov dword [MON_ERROR_OR], 0
        mov dword [MON_LOG], 0
        mov dword [MON_LOG + 4], 0
        mov dword [MON_RESUME], %%back
        mov [MON_SAVESP], esp
        push dword 0                            ; GS
        push dword 0                            ; FS
        push dword 0                            ; DS
        push dword 0                            ; ES
        push dword 0                            ; SS
        push dword 0x7000                       ; SP
        push dword FL_VM | (%2) | 2
        push dword 0xF000                       ; CS
        push dword R(%1)                        ; IP
        iretd
%%back:
%endmacro

pm_main:
        SET_GATE 13, v86_monitor, SEL_CODE0, 0x8E00
        SET_GATE 0x31, v86_int31, SEL_CODE0, 0xEE00
        IOPERM 0x80, 1
        mov edi, VREC
        mov ecx, 16
        xor eax, eax
        rep stosd
        mov dword [0x10010], 0

; ------------------------------------------------------------ IOPL=3
        V86RUN v86_prog1, FL_IOPL3
        CHECK32 [MON_COUNT], 1, "iopl3: only the exit int trapped"
        CHECK32 [MON_ERR], 0x20 * 8 + 2, "iopl3: int 20h to dpl0 gate -> #GP(20h*8+2)"
        mov eax, [MON_EFL]
        and eax, FL_VM | FL_IOPL3
        CHECK32 eax, FL_VM | FL_IOPL3, "monitor sees VM=1 in pushed eflags"
        movzx eax, word [VREC + 0]
        CHECK32 eax, 0xF000, "v86 cs = F000"
        movzx eax, word [0x10010]
        CHECK32 eax, 0x5A5A, "v86 ds=1000h:10h -> linear 10010h"
        movzx eax, word [VREC + 2]
        and eax, FL_IOPL3 | FL_IF
        CHECK32 eax, FL_IOPL3, "v86 pushf (cli'd): iopl 3, IF 0"
        mov eax, [VREC + 4]
        and eax, FL_VM | FL_RF
        CHECK32 eax, 0, "v86 pushfd image: VM and RF clear"
        movzx eax, word [VREC + 8]
        and eax, FL_IF
        CHECK32 eax, FL_IF, "v86 popf sets IF with iopl 3"
        movzx eax, word [VREC + 10]
        CHECK32 eax, 0x7000, "v86 sp"

; ------------------------------------------------------------ IOPL=0: sensitive instructions trap
        V86RUN v86_prog2, 0
        CHECK32 [MON_COUNT], 8, "iopl0: 8 instructions trapped (incl. the exit)"
        CHECK32 [MON_ERROR_OR], 0, "iopl0: all #GP error codes 0"
        CHECK32 [MON_LOG], 0x9D9CFBFA, "iopl0: cli, sti, pushf, popf trapped"
        CHECK32 [MON_LOG + 4], 0xCDF4CDCF, "iopl0: iret, int 21h, hlt, int 20h trapped"

; ------------------------------------------------------------ I/O bitmap, not IOPL
        V86RUN v86_prog3, 0
        CHECK32 [MON_COUNT], 3, "iopl0 i/o: 2 denied ports + exit trapped"
        CHECK32 [MON_LOG], 0x00CDEEE4, "iopl0 i/o: in 81h and out dx=81h trapped"
        V86RUN v86_prog4, FL_IOPL3
        CHECK32 [MON_COUNT], 2, "iopl3 i/o: denied port still traps"
        CHECK32 [MON_LOG], 0x0000CDE4, "iopl3 i/o: in 81h trapped"

; ------------------------------------------------------------ INT n via a DPL3 gate with IOPL=3
        V86RUN v86_prog5, FL_IOPL3
        CHECK32 [MON_COUNT], 1, "int 31h: not trapped"
        movzx eax, word [H31 + 0]
        CHECK32 eax, 0, "int from v86: ds zero in handler"
        movzx eax, word [H31 + 4]
        CHECK32 eax, 0, "int from v86: es zero in handler"
        movzx eax, word [H31 + 8]
        CHECK32 eax, 0, "int from v86: fs zero in handler"
        movzx eax, word [H31 + 12]
        CHECK32 eax, 0, "int from v86: gs zero in handler"
        CHECK32 [H31 + 16], R(v86_prog5_ret), "int from v86: pushed eip"
        CHECK32 [H31 + 20], 0xF000, "int from v86: pushed cs"
        mov eax, [H31 + 24]
        and eax, FL_VM | FL_IOPL3
        CHECK32 eax, FL_VM | FL_IOPL3, "int from v86: pushed eflags VM=1"
        CHECK32 [H31 + 28], 0x7000, "int from v86: pushed esp"
        CHECK32 [H31 + 32], 0, "int from v86: pushed ss"
        CHECK32 [H31 + 36], 0x1234, "int from v86: pushed es"
        CHECK32 [H31 + 40], 0x2345, "int from v86: pushed ds"
        CHECK32 [H31 + 44], 0x3456, "int from v86: pushed fs"
        mov eax, [H31 + 48]
        and eax, FL_VM | FL_IF
        CHECK32 eax, 0, "int from v86: VM and IF clear in handler"
        movzx eax, word [VREC + 0]
        CHECK32 eax, 0x1234, "iretd back to v86 restores es"
        movzx eax, word [VREC + 2]
        CHECK32 eax, 0x3456, "iretd back to v86 restores fs"

; ------------------------------------------------------------ exception from v86
        TRY .de
        V86RUN v86_prog6, FL_IOPL3
.de:    ENDTRY
        CHECK32 [EXC_VEC], 0, "#DE from v86 vector"
        CHECK32 [EXC_EIP], R(v86_prog6_div), "#DE from v86 ip"
        CHECK32 [EXC_CS], 0xF000, "#DE from v86 cs"
        mov eax, [EXC_EFL]
        and eax, FL_VM
        CHECK32 eax, FL_VM, "#DE from v86 pushed VM"
        CHECK32 [EXC_ESP], 0x7000, "#DE from v86 sp"
        CHECK32 [EXC_SS], 0, "#DE from v86 ss"

        jmp finish32

%include "reset.inc"
