; pm_paging: 32-bit paging (4 KiB and 4 MiB PSE pages) and PAE paging.
;
; Covers translation through PDE/PTE and 4 MiB pages, #PF with the exact error code and CR2 (and the
; faulting EIP): not-present PTE/PDE (P=0), read vs write (W/R), user vs supervisor (U/S, from ring 3),
; reserved bits (RSVD: PAE entry with bit 63 set while EFER.NXE=0 or with a bit above MAXPHYADDR),
; instruction fetch (I/D) from an XD page and from a not-present page under PAE with EFER.NXE=1;
; CR0.WP=0 letting supervisor writes through read-only pages and WP=1 faulting them; ring-3 writes to
; read-only user pages faulting regardless of WP; the combined U/S of PDE and PTE; accessed and dirty
; bits set by the CPU (PTE A/D, PDE A, 4 MiB PDE A/D); INVLPG and a CR3 reload making a changed PTE
; visible; PAE PDPTEs loaded with CR3.
;
; Expectations from the Intel SDM Vol. 3A 4.3 (32-bit paging, Tables 4-4..4-6), 4.4 (PAE paging,
; PDPTE registers loaded on MOV CR3), 4.6 (access rights: U/S, R/W, CR0.WP, XD with IA32_EFER.NXE),
; 4.7 (page-fault exceptions: error code bits P, W/R, U/S, RSVD, I/D; CR2), 4.8 (accessed and dirty
; flags), 4.10.4 (INVLPG, MOV to CR3 invalidate TLB entries); Vol. 3A 6.15 "Interrupt 14—Page-Fault".
; Note: the ROM only checks that the *new* translation is used after INVLPG / CR3 reload; whether a
; stale translation is used before the invalidation is implementation-specific and not checked.
; Needs PSE, PAE and NX: the default QEMU CPU (qemu64) has them.
; SDM vs QEMU: for RSVD faults QEMU 7.2 TCG clears the P bit of the error code although SDM 4.7 says
; "bit 3 of the error code can be set only if bit 0 is also set"; assembled with -DQEMU_QUIRKS the
; ROM does not compare bit 0 for those cases.
%include "common.inc"
%include "sys.inc"

PD      equ 0x100000
PT0     equ 0x101000    ; identity 0-4 MiB
PT1     equ 0x102000    ; linear 0x400000-0x7FFFFF test pages
PDPT    equ 0x108000
PAE_PD  equ 0x109000
PAE_PT  equ 0x10A000

P       equ 1
W       equ 2
U       equ 4
A       equ 0x20
D       equ 0x40
PS      equ 0x80

rom_start:
        INIT16
        RESET_GUARD
        PM32_ENTER xgdt, xgdt, pm_main
xgdt:

        bits 32
%macro FAULT 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        EXPECT_EXC %2, %3, %%f, %4
%endmacro
; PF {insn}, err, cr2, name
%macro PF 4
        FAULT {%1}, 14, %2, %4
        CHECK32 [EXC_CR2], %3, {%4, " cr2"}
%endmacro
; PFRSVD {insn}, err, cr2, name: a reserved-bit fault. SDM 4.7: RSVD=1 implies P=1 ("bit 3 of the
; error code can be set only if bit 0 is also set"); QEMU 7.2 TCG reports RSVD with P=0, so with
; -DQEMU_QUIRKS bit 0 is not compared.
%ifdef QEMU_QUIRKS
%macro PFRSVD 4
        TRY %%r
%%f:    %1
%%r:    ENDTRY
        CHECK32 [EXC_VEC], 14, {%4, " vector"}
        mov eax, [EXC_ERR]
        and eax, ~1
        CHECK32 eax, (%2) & ~1, {%4, " error code (QEMU_QUIRKS: bit 0 not compared)"}
        CHECK32 [EXC_EIP], %%f, {%4, " eip"}
        CHECK32 [EXC_CR2], %3, {%4, " cr2"}
%endmacro
%else
%macro PFRSVD 4
        PF {%1}, %2, %3, %4
%endmacro
%endif
; R3PF {insn}, err, cr2, name: insn executed in ring 3
%macro R3PF 4
        TRY %%r
        RING3 %%f, 0x2
%%f:    %1
        int VEC_EXIT
%%r:    ENDTRY
        EXPECT_EXC 14, %2, %%f, %4
        CHECK32 [EXC_CR2], %3, {%4, " cr2"}
%endmacro
%macro R3OK 2
        TRY %%r
        RING3 %%f, 0x2
%%f:    %1
        int VEC_EXIT
%%r:    ENDTRY
        CHECK32 [EXC_VEC], VEC_EXIT, {%2, " no fault"}
%endmacro

pm_main:
        ; clear the table area and build 32-bit tables
        mov edi, PD
        mov ecx, 0x10000 / 4
        xor eax, eax
        rep stosd
        mov edi, PT0
        mov eax, P | W | U
        mov ecx, 1024
.pt0:   stosd
        add eax, 0x1000
        loop .pt0
        mov dword [PD + 0 * 4], PT0 | P | W | U
        mov dword [PD + 1 * 4], PT1 | P | W | U
        mov dword [PD + 2 * 4], 0x400000 | PS | P | W | U
        mov dword [PT1 + 0 * 4], 0x200000 | P | W | U
        mov dword [PT1 + 2 * 4], 0x201000 | P | U          ; read-only user
        mov dword [PT1 + 3 * 4], 0x202000 | P | W          ; supervisor
        mov dword [PT1 + 4 * 4], 0x203000 | P | W | U      ; A/D test
        mov dword [PT1 + 5 * 4], 0x204000 | P | W | U      ; INVLPG test
        mov dword [PT1 + 6 * 4], 0x206000 | P | W | U      ; CR3 reload test
        mov dword [PT1 + 7 * 4], 0x400000 | P | W | U      ; alias of the 4 MiB page's first 4 KiB
        mov dword [0x200000], 0
        mov dword [0x201000], 0x0F0F0F0F
        mov dword [0x204000], 0xAAAA0001
        mov dword [0x205000], 0xBBBB0002
        mov dword [0x206000], 0xCCCC0003
        mov dword [0x207000], 0xDDDD0004
        mov eax, PD
        mov cr3, eax
        mov eax, cr4
        or eax, 0x10                            ; PSE
        mov cr4, eax
        mov eax, cr0
        or eax, 0x80000000
        and eax, ~0x10000                       ; WP=0
        mov cr0, eax
        jmp .paged
.paged:
; ------------------------------------------------------------ translation
        mov dword [0x400000], 0x12345678
        CHECK32 [0x200000], 0x12345678, "4k pte maps 0x400000 -> 0x200000"
        mov dword [0x800010], 0xFEEDBEEF
        CHECK32 [0x407010], 0xFEEDBEEF, "4m page maps 0x800000 -> 0x400000"

; ------------------------------------------------------------ not present, W/R
        PF {mov eax, [0x401010]}, 0, 0x401010, "#PF read not-present pte"
        PF {mov dword [0x401ffc], 1}, 2, 0x401ffc, "#PF write not-present pte"
        PF {mov eax, [0xC00004]}, 0, 0xC00004, "#PF read not-present pde"

; ------------------------------------------------------------ CR0.WP
        TRY .wp0
        mov dword [0x402000], 0x11223344
.wp0:   ENDTRY
        EXPECT_NOEXC "supervisor write to r/o page with WP=0"
        CHECK32 [0x201000], 0x11223344, "supervisor write with WP=0 landed"
        mov eax, cr0
        or eax, 0x10000
        mov cr0, eax
        PF {mov dword [0x402004], 1}, 3, 0x402004, "#PF supervisor write to r/o page with WP=1"
        mov eax, cr0
        and eax, ~0x10000
        mov cr0, eax

; ------------------------------------------------------------ user/supervisor (ring 3)
        R3OK {mov eax, [ss:0x402000]}, "ring3 read r/o user page"
        R3PF {mov eax, [ss:0x403000]}, 5, 0x403000, "#PF ring3 read supervisor page"
        R3PF {mov dword [ss:0x403008], 0}, 7, 0x403008, "#PF ring3 write supervisor page"
        R3PF {mov dword [ss:0x402000], 0}, 7, 0x402000, "#PF ring3 write r/o user page (WP=0)"
        R3PF {mov eax, [ss:0x401000]}, 4, 0x401000, "#PF ring3 read not-present"
        R3PF {mov dword [ss:0x401000], 0}, 6, 0x401000, "#PF ring3 write not-present"
        and dword [PD + 1 * 4], ~U              ; PDE supervisor, PTE user
        mov eax, cr3
        mov cr3, eax
        R3PF {mov eax, [ss:0x400000]}, 5, 0x400000, "#PF ring3 read: pde u/s=0, pte u/s=1"
        or dword [PD + 1 * 4], U
        and dword [PD + 1 * 4], ~W              ; PDE read-only, PTE writable
        mov eax, cr3
        mov cr3, eax
        R3PF {mov dword [ss:0x400000], 0}, 7, 0x400000, "#PF ring3 write: pde r/w=0, pte r/w=1"
        or dword [PD + 1 * 4], W
        mov eax, cr3
        mov cr3, eax

; ------------------------------------------------------------ accessed / dirty
        and dword [PT1 + 4 * 4], ~(A | D)
        and dword [PD + 1 * 4], ~(A | D)
        and dword [PD + 2 * 4], ~(A | D)
        mov eax, cr3
        mov cr3, eax
        mov eax, [0x404000]
        mov eax, [PT1 + 4 * 4]
        and eax, A | D
        CHECK32 eax, A, "read sets pte A, not D"
        mov eax, [PD + 1 * 4]
        and eax, A
        CHECK32 eax, A, "read sets pde A"
        mov dword [0x404000], 1
        mov eax, [PT1 + 4 * 4]
        and eax, A | D
        CHECK32 eax, A | D, "write sets pte D"
        mov eax, [0x800100]
        mov eax, [PD + 2 * 4]
        and eax, A | D
        CHECK32 eax, A, "read sets 4m pde A, not D"
        mov dword [0x800100], 1
        mov eax, [PD + 2 * 4]
        and eax, A | D
        CHECK32 eax, A | D, "write sets 4m pde D"

; ------------------------------------------------------------ INVLPG / CR3 reload
        mov eax, [0x405000]
        CHECK32 eax, 0xAAAA0001, "invlpg page before change"
        mov dword [PT1 + 5 * 4], 0x205000 | P | W | U
        invlpg [0x405000]
        mov eax, [0x405000]
        CHECK32 eax, 0xBBBB0002, "invlpg: new mapping used"
        mov eax, [0x406000]
        CHECK32 eax, 0xCCCC0003, "cr3 reload page before change"
        mov dword [PT1 + 6 * 4], 0x207000 | P | W | U
        mov eax, cr3
        mov cr3, eax
        mov eax, [0x406000]
        CHECK32 eax, 0xDDDD0004, "cr3 reload: new mapping used"
        mov dword [PT1 + 1 * 4], 0x200000 | P | W | U   ; not-present -> present: no flush needed
        mov eax, [0x401000]
        CHECK32 eax, 0x12345678, "not-present pte made present"
        mov dword [PT1 + 1 * 4], 0
        invlpg [0x401000]
        PF {mov eax, [0x401000]}, 0, 0x401000, "#PF after pte cleared + invlpg"

; ------------------------------------------------------------ PAE
        mov eax, cr0
        and eax, ~0x80000000
        mov cr0, eax
        mov edi, PDPT
        mov ecx, 0x3000 / 4
        xor eax, eax
        rep stosd
        mov dword [PDPT], PAE_PD | P
        mov dword [PAE_PD + 0 * 8], 0x000000 | PS | P | W | U
        mov dword [PAE_PD + 1 * 8], 0x200000 | PS | P | W | U
        mov dword [PAE_PD + 2 * 8], PAE_PT | P | W | U
        mov dword [PAE_PT + 0 * 8], 0x200000 | P | W | U
        mov dword [PAE_PT + 1 * 8], 0x201000 | P | W | U
        mov dword [PAE_PT + 1 * 8 + 4], 0x80000000      ; XD
        mov dword [PAE_PT + 2 * 8], 0x202000 | P | W | U
        mov dword [PAE_PT + 2 * 8 + 4], 0x00002000      ; bit 45: above MAXPHYADDR (reserved)
        mov dword [PAE_PT + 3 * 8], 0x208000 | P | W | U   ; code page
        mov dword [PAE_PT + 4 * 8], 0x208000 | P | W | U   ; same code, XD
        mov dword [PAE_PT + 4 * 8 + 4], 0x80000000
        mov byte [0x208000], 0xC3                          ; ret
        mov eax, cr4
        or eax, 0x20                            ; PAE
        mov cr4, eax
        mov eax, PDPT
        mov cr3, eax
        mov eax, cr0
        or eax, 0x80000000
        mov cr0, eax
        jmp .pae
.pae:
        mov dword [0x400000], 0x9ABCDEF0
        CHECK32 [0x200000], 0x9ABCDEF0, "pae: 4k pte maps 0x400000"
        CHECK32 [0x201000], 0x11223344, "pae: 2m page identity"
        PFRSVD {mov eax, [0x401000]}, 9, 0x401000, "#PF pae xd bit with NXE=0 -> RSVD"
        PFRSVD {mov eax, [0x402000]}, 9, 0x402000, "#PF pae bit 45 -> RSVD read"
        PFRSVD {mov dword [0x402000], 0}, 0xB, 0x402000, "#PF pae bit 45 -> RSVD write"
        PF {mov eax, [0x405000]}, 0, 0x405000, "#PF pae not present"
        mov ecx, 0xC0000080
        rdmsr
        or eax, 0x800                           ; EFER.NXE
        wrmsr
        mov eax, cr3
        mov cr3, eax
        TRY .nx1
        mov eax, [0x401000]
.nx1:   ENDTRY
        EXPECT_NOEXC "nxe=1: read from xd page"
        CHECK32 eax, 0x11223344, "nxe=1: xd page data"
        TRY .nx2
        mov eax, 0x403000
        call eax
.nx2:   ENDTRY
        EXPECT_NOEXC "nxe=1: execute from non-xd page"
        TRY .nx3
        mov eax, 0x404000
        call eax
.nx3:   ENDTRY
        CHECK32 [EXC_VEC], 14, "#PF fetch from xd page vector"
        CHECK32 [EXC_ERR], 0x11, "#PF fetch from xd page error code (P|I/D)"
        CHECK32 [EXC_EIP], 0x404000, "#PF fetch from xd page eip"
        CHECK32 [EXC_CR2], 0x404000, "#PF fetch from xd page cr2"
        TRY .nx4
        mov eax, 0x405000
        call eax
.nx4:   ENDTRY
        CHECK32 [EXC_VEC], 14, "#PF fetch not-present vector"
        CHECK32 [EXC_ERR], 0x10, "#PF fetch not-present error code (I/D)"
        CHECK32 [EXC_CR2], 0x405000, "#PF fetch not-present cr2"
        PFRSVD {mov eax, [0x402000]}, 9, 0x402000, "#PF nxe=1 bit 45 still RSVD"

        ; back to no paging for the report
        mov eax, cr0
        and eax, ~0x80000000
        mov cr0, eax
        jmp finish32

%include "reset.inc"
