; mb_disk: a multiboot (v1) test kernel that drives the disk controllers without an operating system.
;
; A flat image with the a.out-kludge address fields (header flag 16), loaded at 1 MiB, run like this
; (QEMU; Ferrite takes `--kernel mb_disk.bin --hda ide.img --disk sata.img,if=ahci`):
;
;   qemu-system-x86_64 -kernel mb_disk.bin -m 128 -display none -nodefaults \
;     -drive file=ide.img,if=ide,format=raw,index=0 \
;     -device ahci,id=ahci -drive file=sata.img,if=none,id=s0,format=raw -device ide-hd,drive=s0,bus=ahci.0 \
;     -device isa-debug-exit,iobase=0xf4,iosize=4 -debugcon stdio
;
; The images are made by the test: ide.img is 4096 sectors, sata.img 6144; dword i (0-127) of sector n
; holds (n << 16) | i. The kernel checks what it reads against that pattern and writes sectors with the
; pattern XORed with a mask the host checks afterwards:
;   IDE  sectors 100-101 (PIO WRITE SECTORS, mask 0xFFFFFFFF), 300-307 (WRITE DMA, mask 0x5A5A5A5A);
;   AHCI sectors 400-407 (WRITE DMA EXT, mask 0x3C3C3C3C).
;
; IDE (primary master, compatibility ports 0x1F0-0x1F7/0x3F6, polled with nIEN where no interrupt is
; wanted): SRST and the ATA signature, IDENTIFY DEVICE (not ATAPI, LBA28 and LBA48 capacity, LBA48
; supported), READ SECTORS (LBA28), WRITE SECTORS + FLUSH CACHE, READ SECTORS EXT (LBA48) of what was
; written, SET MULTIPLE MODE + READ MULTIPLE, an out-of-range read aborted with ERR; bus-master DMA
; through the PIIX3 function's BAR4 with a two-entry PRD table (scatter over two buffers): READ DMA,
; WRITE DMA + FLUSH CACHE, READ DMA EXT of what was written, the bus master's interrupt bit, active bit
; and error bit, and the device's INTRQ (nIEN clear) seen as the bus master's interrupt bit.
;
; AHCI (the first function of class 01:06:01 on bus 0; BAR5 programmed by the kernel): GHC.AE, CAP and
; PI, port 0's link (SSTS.DET = 3) and disk signature, the port started with our command list and
; received-FIS area; IDENTIFY DEVICE (PIO data-in through a command list), READ DMA EXT with a two-entry
; PRDT, PRDBC, the D2H register FIS, WRITE DMA EXT + FLUSH CACHE EXT, READ FPDMA QUEUED (NCQ, tag 3,
; SActive), and an out-of-range read ending with TFD.ERR and PxIS.TFES.
;
; Reporting: "PASS: name" / "FAIL: name" on port 0xE9; the failure count goes to the exit port 0xF4
; (status (n << 1) | 1, so 1 means every case passed).
;
; Sources: ATA/ATAPI-6 (T13/1410D) sections 6 (status, error, device control, SRST, signatures), 8
; (IDENTIFY DEVICE words 0, 47, 60-61, 83, 100-103; READ/WRITE SECTORS (EXT), READ/WRITE DMA (EXT), READ
; MULTIPLE, SET MULTIPLE MODE, FLUSH CACHE (EXT)) and 9 (PIO and DMA protocols); Intel 82371AB (PIIX4)
; datasheet, bus-master IDE registers and PRD format (the PIIX3's are the same); Serial ATA AHCI 1.3.1
; sections 3 (HBA and port registers), 4.2 (received FIS, command list, command table, PRDT), 5.5
; (issuing commands) and 10.1 (software initialisation); SATA 3.x (register H2D FIS, READ FPDMA QUEUED).

        bits 32
        cpu 686
        org 0x100000

MB_MAGIC    equ 0x1BADB002
MB_FLAGS    equ 0x00010003
DBG_PORT    equ 0xE9
EXIT_PORT   equ 0xF4

IDE_DATA    equ 0x1F0
IDE_ERR     equ 0x1F1
IDE_COUNT   equ 0x1F2
IDE_LBA0    equ 0x1F3
IDE_LBA1    equ 0x1F4
IDE_LBA2    equ 0x1F5
IDE_DEV     equ 0x1F6
IDE_CMD     equ 0x1F7
IDE_CTL     equ 0x3F6

ST_ERR      equ 0x01
ST_DRQ      equ 0x08
ST_DRDY     equ 0x40
ST_BSY      equ 0x80

IDE_SECTORS  equ 4096
SATA_SECTORS equ 6144
TIMEOUT      equ 20000000
ABAR         equ 0xE0100000      ; where the kernel puts the AHCI registers (inside both PCI holes)

mb_header:
        dd MB_MAGIC
        dd MB_FLAGS
        dd -(MB_MAGIC + MB_FLAGS)
        dd mb_header
        dd mb_header
        dd load_end
        dd bss_end
        dd start

; ---------------------------------------------------------------- reporting

; EXPECT cc, "name": PASS if condition cc holds (flags from the preceding compare), else FAIL.
%macro EXPECT 2
        push esi
        j%1 %%ok
        mov esi, %%fail_msg
        call fail
        jmp %%done
%%fail_msg: db "FAIL: ", %2, 10, 0
%%ok:
        mov esi, %%pass_msg
        call puts
        jmp %%done
%%pass_msg: db "PASS: ", %2, 10, 0
%%done:
        pop esi
%endmacro

puts:
        push eax
        push esi
.l:     lodsb
        test al, al
        jz .d
        out DBG_PORT, al
        jmp .l
.d:     pop esi
        pop eax
        ret

fail:
        inc dword [failures]
        jmp puts

; ---------------------------------------------------------------- entry

start:
        mov esp, stack_top
        cld
        lgdt [gdt_desc]
        jmp 0x08:.reload
.reload:
        mov ax, 0x10
        mov ds, ax
        mov es, ax
        mov fs, ax
        mov gs, ax
        mov ss, ax

        call ide_pio
        call ide_dma
        call ahci

        cmp dword [failures], 0
        EXPECT e, "all cases"
        mov eax, [failures]
        out EXIT_PORT, eax
        cli
.hang:  hlt
        jmp .hang

; ---------------------------------------------------------------- patterns

; fill: EDI = buffer, EBX = first LBA, ECX = sectors, EDX = mask. Writes ((lba << 16) | i) ^ mask.
fill:
        pushad
.s:     mov eax, ebx
        shl eax, 16
        mov ebp, 128
.d:     mov esi, eax
        xor esi, edx
        mov [edi], esi
        add edi, 4
        inc eax
        dec ebp
        jnz .d
        inc ebx
        dec ecx
        jnz .s
        popad
        ret

; check: ESI = buffer, EBX = first LBA, ECX = sectors, EDX = mask. EAX = 0 when it all matches.
check:
        push ebx
        push ecx
        push esi
        push ebp
.s:     mov eax, ebx
        shl eax, 16
        mov ebp, 128
.d:     push eax
        xor eax, edx
        cmp [esi], eax
        pop eax
        jne .bad
        add esi, 4
        inc eax
        dec ebp
        jnz .d
        inc ebx
        dec ecx
        jnz .s
        xor eax, eax
        jmp .ret
.bad:   mov eax, 1
.ret:   pop ebp
        pop esi
        pop ecx
        pop ebx
        ret

; clear: EDI = buffer, ECX = bytes (a multiple of 4): fills with 0xEEEEEEEE.
clear:
        push eax
        push ecx
        push edi
        shr ecx, 2
        mov eax, 0xEEEEEEEE
        rep stosd
        pop edi
        pop ecx
        pop eax
        ret

; ---------------------------------------------------------------- PCI configuration (mechanism #1)

; pci_read: EAX = address (0x80000000 | bus << 16 | dev << 11 | fn << 8 | reg) -> EAX = dword.
pci_read:
        push edx
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        in eax, dx
        pop edx
        ret

; pci_write: EAX = address, ECX = value.
pci_write:
        push edx
        push eax
        mov dx, 0xCF8
        out dx, eax
        mov dx, 0xCFC
        mov eax, ecx
        out dx, eax
        pop eax
        pop edx
        ret

; ---------------------------------------------------------------- IDE helpers

; ide_wait: waits until BSY is clear (bounded). AL = status; CF set on timeout. Reads the status
; register (which acknowledges INTRQ).
ide_wait:
        push ecx
        push edx
        mov ecx, TIMEOUT
        mov dx, IDE_CMD
.w:     in al, dx
        test al, ST_BSY
        jz .ok
        dec ecx
        jnz .w
        stc
        jmp .r
.ok:    clc
.r:     pop edx
        pop ecx
        ret

; ide_lba28: EBX = LBA, ECX = count. Selects the master in LBA mode and loads the task file.
ide_lba28:
        push eax
        push edx
        mov dx, IDE_DEV
        mov eax, ebx
        shr eax, 24
        and al, 0x0F
        or al, 0xE0
        out dx, al
        call ide_wait
        mov dx, IDE_COUNT
        mov al, cl
        out dx, al
        mov eax, ebx
        mov dx, IDE_LBA0
        out dx, al
        shr eax, 8
        mov dx, IDE_LBA1
        out dx, al
        shr eax, 8
        mov dx, IDE_LBA2
        out dx, al
        pop edx
        pop eax
        ret

; ide_lba48: EBX = LBA (below 4G sectors), ECX = count: the high-order bytes first, then the low ones.
ide_lba48:
        push eax
        push edx
        mov dx, IDE_DEV
        mov al, 0x40
        out dx, al
        call ide_wait
        mov dx, IDE_COUNT
        mov al, ch
        out dx, al
        mov eax, ebx
        shr eax, 24
        mov dx, IDE_LBA0
        out dx, al
        xor al, al
        mov dx, IDE_LBA1
        out dx, al
        mov dx, IDE_LBA2
        out dx, al
        mov dx, IDE_COUNT
        mov al, cl
        out dx, al
        mov eax, ebx
        mov dx, IDE_LBA0
        out dx, al
        shr eax, 8
        mov dx, IDE_LBA1
        out dx, al
        shr eax, 8
        mov dx, IDE_LBA2
        out dx, al
        pop edx
        pop eax
        ret

; ide_command: AL = command.
ide_command:
        push edx
        mov dx, IDE_CMD
        out dx, al
        pop edx
        ret

; ide_pio_in: reads ECX DRQ blocks of EBP words each into EDI. EAX = 0 on success.
ide_pio_in:
        push ecx
        push edx
        push edi
.blk:   call ide_wait
        jc .bad
        test al, ST_ERR
        jnz .bad
        test al, ST_DRQ
        jz .bad
        push ecx
        mov ecx, ebp
        mov dx, IDE_DATA
        rep insw
        pop ecx
        dec ecx
        jnz .blk
        call ide_wait
        jc .bad
        test al, ST_DRQ | ST_ERR
        jnz .bad
        xor eax, eax
        jmp .r
.bad:   mov eax, 1
.r:     pop edi
        pop edx
        pop ecx
        ret

; ide_pio_out: writes ECX sectors from ESI. EAX = 0 on success (no ERR, DRQ clear at the end).
ide_pio_out:
        push ecx
        push edx
        push esi
.blk:   call ide_wait
        jc .bad
        test al, ST_ERR
        jnz .bad
        test al, ST_DRQ
        jz .bad
        push ecx
        mov ecx, 256
        mov dx, IDE_DATA
        rep outsw
        pop ecx
        dec ecx
        jnz .blk
        call ide_wait
        jc .bad
        test al, ST_DRQ | ST_ERR
        jnz .bad
        xor eax, eax
        jmp .r
.bad:   mov eax, 1
.r:     pop esi
        pop edx
        pop ecx
        ret

; ide_nodata: AL = command (task file loaded). EAX = 0 when it ends without ERR or DRQ.
ide_nodata:
        call ide_command
        call ide_wait
        jc .bad
        test al, ST_ERR | ST_DRQ
        jnz .bad
        xor eax, eax
        ret
.bad:   mov eax, 1
        ret

; ---------------------------------------------------------------- IDE: PIO

ide_pio:
        mov dx, IDE_CTL
        mov al, 0x06                ; SRST, nIEN
        out dx, al
        mov ecx, 1000
.d:     in al, 0x80
        dec ecx
        jnz .d
        mov al, 0x02                ; SRST released, nIEN
        out dx, al
        ; Select device 0 until the reset is over: a write to the device register while BSY is set is
        ; ignored (ATA-6 7.15.6), and a channel whose slave is selected and absent reads status 0.
        mov ecx, TIMEOUT
.srst:  mov dx, IDE_DEV
        mov al, 0xA0
        out dx, al
        mov dx, IDE_CMD
        in al, dx
        and al, ST_BSY | ST_DRDY
        cmp al, ST_DRDY
        je .srst_done
        dec ecx
        jnz .srst
.srst_done:
        EXPECT e, "IDE: SRST completes (device 0 selected, BSY clear, DRDY)"
        mov dx, IDE_COUNT
        in al, dx
        mov ah, al
        mov dx, IDE_LBA0
        in al, dx
        shl eax, 8
        mov dx, IDE_LBA1
        in al, dx
        shl eax, 8
        mov dx, IDE_LBA2
        in al, dx
        cmp eax, 0x01010000
        EXPECT e, "IDE: ATA disk signature after SRST (count 1, LBA 1, 0, 0)"
        mov dx, IDE_ERR
        in al, dx
        cmp al, 1
        EXPECT e, "IDE: diagnostic code 1 after SRST"

        ; IDENTIFY DEVICE.
        mov dx, IDE_DEV
        mov al, 0xA0
        out dx, al
        call ide_wait
        test al, ST_DRDY
        EXPECT nz, "IDE: DRDY before IDENTIFY"
        mov al, 0xEC
        call ide_command
        mov edi, ident
        mov ecx, 1
        mov ebp, 256
        call ide_pio_in
        test eax, eax
        EXPECT z, "IDE: IDENTIFY DEVICE transfers one block"
        test word [ident], 0x8000
        EXPECT z, "IDE: IDENTIFY word 0 says ATA device"
        cmp dword [ident + 60 * 2], IDE_SECTORS
        EXPECT e, "IDE: IDENTIFY words 60-61 give the LBA28 capacity"
        cmp dword [ident + 100 * 2], IDE_SECTORS
        EXPECT e, "IDE: IDENTIFY words 100-103 give the LBA48 capacity"
        test word [ident + 83 * 2], 1 << 10
        EXPECT nz, "IDE: IDENTIFY word 83 has LBA48"
        test word [ident + 49 * 2], 1 << 8
        EXPECT nz, "IDE: IDENTIFY word 49 has DMA"

        ; READ SECTORS, LBA 3, 2 sectors.
        mov edi, pbuf
        mov ecx, 4096
        call clear
        mov ebx, 3
        mov ecx, 2
        call ide_lba28
        mov al, 0x20
        call ide_command
        mov ebp, 256
        call ide_pio_in
        test eax, eax
        EXPECT z, "IDE: READ SECTORS protocol"
        mov esi, pbuf
        xor edx, edx
        call check
        test eax, eax
        EXPECT z, "IDE: READ SECTORS data"

        ; WRITE SECTORS, LBA 100, 2 sectors, inverted pattern; FLUSH CACHE.
        mov edi, pbuf
        mov ebx, 100
        mov ecx, 2
        mov edx, 0xFFFFFFFF
        call fill
        call ide_lba28
        mov al, 0x30
        call ide_command
        mov esi, pbuf
        call ide_pio_out
        test eax, eax
        EXPECT z, "IDE: WRITE SECTORS protocol"
        mov al, 0xE7
        call ide_nodata
        test eax, eax
        EXPECT z, "IDE: FLUSH CACHE"

        ; READ SECTORS EXT (LBA48) of what was written.
        mov edi, pbuf
        mov ecx, 4096
        call clear
        mov ebx, 100
        mov ecx, 2
        call ide_lba48
        mov al, 0x24
        call ide_command
        mov ebp, 256
        call ide_pio_in
        test eax, eax
        EXPECT z, "IDE: READ SECTORS EXT protocol"
        mov esi, pbuf
        mov edx, 0xFFFFFFFF
        call check
        test eax, eax
        EXPECT z, "IDE: READ SECTORS EXT reads back what WRITE SECTORS wrote"

        ; SET MULTIPLE MODE 4, READ MULTIPLE of 8 sectors at LBA 10: two DRQ blocks of 4 sectors.
        mov ebx, 0
        mov ecx, 4
        call ide_lba28
        mov al, 0xC6
        call ide_nodata
        test eax, eax
        EXPECT z, "IDE: SET MULTIPLE MODE 4"
        mov edi, pbuf
        mov ecx, 4096
        call clear
        mov ebx, 10
        mov ecx, 8
        call ide_lba28
        mov al, 0xC4
        call ide_command
        mov ecx, 2
        mov ebp, 4 * 256
        call ide_pio_in
        test eax, eax
        EXPECT z, "IDE: READ MULTIPLE in blocks of 4 sectors"
        mov esi, pbuf
        mov ecx, 8
        xor edx, edx
        call check
        test eax, eax
        EXPECT z, "IDE: READ MULTIPLE data"

        ; A read past the end of the disk ends with ERR and ABRT (QEMU: ABRT; ATA-6: IDNF; both set ABRT
        ; in Ferrite), and no data.
        mov ebx, IDE_SECTORS + 10
        mov ecx, 1
        call ide_lba28
        mov al, 0x20
        call ide_command
        call ide_wait
        mov ah, al
        and ah, ST_ERR | ST_DRQ
        cmp ah, ST_ERR
        EXPECT e, "IDE: read past the end: ERR, no DRQ"
        mov dx, IDE_ERR
        in al, dx
        test al, 0x04
        EXPECT nz, "IDE: read past the end: ABRT in the error register"
        ret

; ---------------------------------------------------------------- IDE: bus-master DMA

; bm_run: EBX = LBA, AL = command, AH = bus-master direction (8: to memory, 0: from memory), LBA48 when
; the command is an EXT one (0x25/0x35). The PRD table is `prd` (two entries of 2048 bytes: dbuf and
; dbuf2). EAX = 0 when the interrupt bit came, no error bit, not active, device status without ERR.
bm_run:
        push ebx
        push ecx
        push edx
        mov [bm_cmd], al
        mov [bm_dir], ah
        mov dword [prd], dbuf
        mov dword [prd + 4], 2048
        mov dword [prd + 8], dbuf2
        mov dword [prd + 12], 0x80000000 | 2048
        mov edx, [bm_base]
        xor al, al
        out dx, al                  ; stopped
        add edx, 2
        mov al, 0x06
        out dx, al                  ; clear interrupt and error
        add edx, 2
        mov eax, prd
        out dx, eax
        mov edx, [bm_base]
        mov al, [bm_dir]
        out dx, al                  ; direction, not started yet
        mov dx, IDE_CTL
        xor al, al
        out dx, al                  ; nIEN clear: INTRQ reaches the bus master's interrupt bit
        mov ecx, 8
        mov al, [bm_cmd]
        cmp al, 0x25
        je .ext
        cmp al, 0x35
        je .ext
        call ide_lba28
        jmp .go
.ext:   call ide_lba48
.go:    mov al, [bm_cmd]
        call ide_command
        mov edx, [bm_base]
        mov al, [bm_dir]
        or al, 1
        out dx, al                  ; start
        add edx, 2
        mov ecx, TIMEOUT
.w:     in al, dx
        test al, 0x04
        jnz .irq
        dec ecx
        jnz .w
        jmp .bad
.irq:   mov [bm_status], al
        mov edx, [bm_base]
        mov al, [bm_dir]
        out dx, al                  ; stop
        call ide_wait               ; device status; reading it acknowledges INTRQ
        jc .bad
        mov [bm_devstatus], al
        mov edx, [bm_base]
        add edx, 2
        mov al, 0x04
        out dx, al                  ; clear the interrupt bit
        in al, dx
        test al, 0x04
        jnz .bad
        mov al, [bm_status]
        test al, 0x03               ; error or still active
        jnz .bad
        test byte [bm_devstatus], ST_ERR | ST_DRQ
        jnz .bad
        xor eax, eax
        jmp .r
.bad:   mov eax, 1
.r:     push eax
        mov dx, IDE_CTL
        mov al, 0x02
        out dx, al                  ; nIEN again
        pop eax
        pop edx
        pop ecx
        pop ebx
        ret

ide_dma:
        ; The bus-master block: BAR4 of the PIIX3 IDE function (00:01.1); I/O decode and bus mastering on.
        mov eax, 0x80000000 | (1 << 11) | (1 << 8) | 0x00
        call pci_read
        cmp eax, 0x70108086
        EXPECT e, "IDE: PIIX3 IDE function 8086:7010 at 00:01.1"
        mov eax, 0x80000000 | (1 << 11) | (1 << 8) | 0x20
        call pci_read
        mov ebx, eax
        and eax, 0xFFF0
        mov [bm_base], eax
        test ebx, 1
        EXPECT nz, "IDE: BAR4 is an I/O BAR"
        mov eax, 0x80000000 | (1 << 11) | (1 << 8) | 0x04
        call pci_read
        mov ecx, eax
        and ecx, 0xFFFF
        or ecx, 0x05                ; I/O space, bus master
        mov eax, 0x80000000 | (1 << 11) | (1 << 8) | 0x04
        call pci_write

        ; READ DMA, LBA 20, 8 sectors, two PRD entries.
        mov edi, dbuf
        mov ecx, 2048
        call clear
        mov edi, dbuf2
        call clear
        mov ebx, 20
        mov ax, 0x08C8
        call bm_run
        test eax, eax
        EXPECT z, "IDE: READ DMA: interrupt, not active, no error"
        mov esi, dbuf
        mov ecx, 4
        xor edx, edx
        call check
        mov ebp, eax
        mov esi, dbuf2
        mov ebx, 24
        call check
        or eax, ebp
        EXPECT z, "IDE: READ DMA data through two PRD entries"

        ; WRITE DMA, LBA 300, 8 sectors; FLUSH CACHE.
        mov edi, dbuf
        mov ebx, 300
        mov ecx, 4
        mov edx, 0x5A5A5A5A
        call fill
        mov edi, dbuf2
        mov ebx, 304
        call fill
        mov ebx, 300
        mov ax, 0x00CA
        call bm_run
        test eax, eax
        EXPECT z, "IDE: WRITE DMA: interrupt, not active, no error"
        xor ebx, ebx
        xor ecx, ecx
        call ide_lba28
        mov al, 0xE7
        call ide_nodata
        test eax, eax
        EXPECT z, "IDE: FLUSH CACHE after WRITE DMA"

        ; READ DMA EXT (LBA48) of what was written.
        mov edi, dbuf
        mov ecx, 2048
        call clear
        mov edi, dbuf2
        call clear
        mov ebx, 300
        mov ax, 0x0825
        call bm_run
        test eax, eax
        EXPECT z, "IDE: READ DMA EXT: interrupt, not active, no error"
        mov esi, dbuf
        mov ebx, 300
        mov ecx, 4
        mov edx, 0x5A5A5A5A
        call check
        mov ebp, eax
        mov esi, dbuf2
        mov ebx, 304
        call check
        or eax, ebp
        EXPECT z, "IDE: READ DMA EXT reads back what WRITE DMA wrote"

        ; And by PIO: the same sectors.
        mov edi, pbuf
        mov ecx, 4096
        call clear
        mov ebx, 300
        mov ecx, 8
        call ide_lba28
        mov al, 0x20
        call ide_command
        mov ebp, 256
        call ide_pio_in
        mov esi, pbuf
        mov edx, 0x5A5A5A5A
        call check
        test eax, eax
        EXPECT z, "IDE: READ SECTORS reads back what WRITE DMA wrote"
        ret

; ---------------------------------------------------------------- AHCI

; ahci_issue: ECX = slot. Sets PxCI and waits until the slot's bit clears or TFD.ERR (bounded).
; EAX = 0 on completion without error.
ahci_issue:
        push ecx
        push edx
        push ebx
        mov ebx, 1
        shl ebx, cl
        mov edx, [port]
        mov [edx + 0x38], ebx
        mov ecx, TIMEOUT
.w:     test [edx + 0x38], ebx
        jz .done
        test dword [edx + 0x20], ST_ERR
        jnz .bad
        dec ecx
        jnz .w
        jmp .bad
.done:  test dword [edx + 0x20], ST_ERR | ST_BSY | ST_DRQ
        jnz .bad
        xor eax, eax
        jmp .r
.bad:   mov eax, 1
.r:     pop ebx
        pop edx
        pop ecx
        ret

; ahci_fis: EBX = LBA, ECX = count, AL = command, ESI = command table: a register H2D FIS (LBA mode).
ahci_fis:
        push edi
        push ecx
        push eax
        mov edi, esi
        push ecx
        xor eax, eax
        mov ecx, 0x80 / 4
        rep stosd
        pop ecx
        pop eax
        mov byte [esi], 0x27        ; register H2D
        mov byte [esi + 1], 0x80    ; C: a command
        mov [esi + 2], al
        mov [esi + 4], bl
        mov [esi + 5], bh
        push ebx
        shr ebx, 16
        mov [esi + 6], bl
        mov byte [esi + 7], 0x40    ; LBA mode
        mov [esi + 8], bh
        pop ebx
        mov [esi + 12], cx
        pop ecx
        pop edi
        ret

; ahci_header: slot 0's command header: ECX = PRDT entries, EDX = flags (bit 6: write). Table = ctab.
ahci_header:
        push eax
        mov eax, ecx
        shl eax, 16
        or eax, edx
        or eax, 5                   ; CFL: 5 dwords
        mov [cmdlist], eax
        mov dword [cmdlist + 4], 0  ; PRDBC
        mov dword [cmdlist + 8], ctab
        mov dword [cmdlist + 12], 0
        pop eax
        ret

; ahci_prd2: the two-entry PRDT of ctab: 2048 bytes at dbuf, 2048 at dbuf2.
ahci_prd2:
        mov dword [ctab + 0x80], dbuf
        mov dword [ctab + 0x84], 0
        mov dword [ctab + 0x88], 0
        mov dword [ctab + 0x8C], 2047
        mov dword [ctab + 0x90], dbuf2
        mov dword [ctab + 0x94], 0
        mov dword [ctab + 0x98], 0
        mov dword [ctab + 0x9C], 2047
        ret

ahci:
        ; Find the controller by class (mass storage, SATA, AHCI 1.0).
        xor ebx, ebx
.scan:  mov eax, ebx
        shl eax, 11
        or eax, 0x80000008
        call pci_read
        shr eax, 8
        cmp eax, 0x010601
        je .found
        inc ebx
        cmp ebx, 32
        jb .scan
        cmp ebx, 32
        EXPECT b, "AHCI: controller of class 01:06:01 on bus 0"
        ret
.found:
        mov eax, ebx
        shl eax, 11
        or eax, 0x80000000
        mov [ahci_cfg], eax
        call pci_read
        cmp eax, 0x29228086
        EXPECT e, "AHCI: 8086:2922 (ICH9)"
        mov eax, [ahci_cfg]
        or eax, 0x24
        mov ecx, ABAR
        call pci_write
        mov eax, [ahci_cfg]
        or eax, 0x04
        call pci_read
        mov ecx, eax
        and ecx, 0xFFFF
        or ecx, 0x06                ; memory space, bus master
        mov eax, [ahci_cfg]
        or eax, 0x04
        call pci_write

        mov esi, ABAR
        or dword [esi + 0x04], 0x80000000
        test dword [esi + 0x04], 0x80000000
        EXPECT nz, "AHCI: GHC.AE set"
        mov eax, [esi + 0x00]
        test eax, 1 << 30
        EXPECT nz, "AHCI: CAP.SNCQ"
        test dword [esi + 0x0C], 1
        EXPECT nz, "AHCI: PI has port 0"
        lea edx, [esi + 0x100]
        mov [port], edx
        mov eax, [edx + 0x28]
        and eax, 0x0F
        cmp eax, 3
        EXPECT e, "AHCI: port 0 link up (SSTS.DET = 3)"

        ; Stop the port, point it at our command list and FIS area, start it.
        and dword [edx + 0x18], ~0x11
        mov ecx, TIMEOUT
.stop:  test dword [edx + 0x18], 0xC000
        jz .stopped
        dec ecx
        jnz .stop
.stopped:
        test dword [edx + 0x18], 0xC000
        EXPECT z, "AHCI: port stops (CR and FR clear)"
        mov dword [edx + 0x00], cmdlist
        mov dword [edx + 0x04], 0
        mov dword [edx + 0x08], rfis
        mov dword [edx + 0x0C], 0
        mov dword [edx + 0x30], 0xFFFFFFFF
        mov dword [edx + 0x10], 0xFFFFFFFF
        mov dword [edx + 0x14], 0
        or dword [edx + 0x18], 0x10 ; FRE
        mov ecx, TIMEOUT
.bsy:   test dword [edx + 0x20], ST_BSY | ST_DRQ
        jz .idle
        dec ecx
        jnz .bsy
.idle:  or dword [edx + 0x18], 0x01 ; ST
        test dword [edx + 0x18], 0x8000
        EXPECT nz, "AHCI: port running (CR set)"
        cmp dword [edx + 0x24], 0x00000101
        EXPECT e, "AHCI: port 0 signature is an ATA disk"

        ; IDENTIFY DEVICE: PIO data-in through the command list, one PRD of 512 bytes.
        mov esi, ctab
        xor ebx, ebx
        xor ecx, ecx
        mov al, 0xEC
        call ahci_fis
        mov dword [ctab + 0x80], ident
        mov dword [ctab + 0x84], 0
        mov dword [ctab + 0x88], 0
        mov dword [ctab + 0x8C], 511
        mov ecx, 1
        xor edx, edx
        call ahci_header
        xor ecx, ecx
        call ahci_issue
        test eax, eax
        EXPECT z, "AHCI: IDENTIFY DEVICE completes"
        cmp dword [cmdlist + 4], 512
        EXPECT e, "AHCI: IDENTIFY PRDBC = 512"
        test word [ident], 0x8000
        EXPECT z, "AHCI: IDENTIFY word 0 says ATA device"
        cmp dword [ident + 100 * 2], SATA_SECTORS
        EXPECT e, "AHCI: IDENTIFY words 100-103 give the capacity"
        test word [ident + 76 * 2], 1 << 8
        EXPECT nz, "AHCI: IDENTIFY word 76 has NCQ"

        ; READ DMA EXT, LBA 40, 8 sectors, two PRDT entries.
        mov edi, dbuf
        mov ecx, 2048
        call clear
        mov edi, dbuf2
        call clear
        mov byte [rfis + 0x40], 0
        mov esi, ctab
        mov ebx, 40
        mov ecx, 8
        mov al, 0x25
        call ahci_fis
        call ahci_prd2
        mov ecx, 2
        xor edx, edx
        call ahci_header
        xor ecx, ecx
        call ahci_issue
        test eax, eax
        EXPECT z, "AHCI: READ DMA EXT completes"
        cmp dword [cmdlist + 4], 4096
        EXPECT e, "AHCI: READ DMA EXT PRDBC = 4096"
        cmp byte [rfis + 0x40], 0x34
        EXPECT e, "AHCI: D2H register FIS received"
        mov al, [rfis + 0x42]
        and al, ST_BSY | ST_DRQ | ST_ERR | ST_DRDY
        cmp al, ST_DRDY
        EXPECT e, "AHCI: D2H FIS status: DRDY, no error"
        mov edx, [port]
        test dword [edx + 0x10], 1
        EXPECT nz, "AHCI: PxIS.DHRS"
        mov dword [edx + 0x10], 0xFFFFFFFF
        mov esi, dbuf
        mov ebx, 40
        mov ecx, 4
        xor edx, edx
        call check
        mov ebp, eax
        mov esi, dbuf2
        mov ebx, 44
        call check
        or eax, ebp
        EXPECT z, "AHCI: READ DMA EXT data through two PRDT entries"

        ; WRITE DMA EXT, LBA 400, 8 sectors; FLUSH CACHE EXT; READ DMA EXT back.
        mov edi, dbuf
        mov ebx, 400
        mov ecx, 4
        mov edx, 0x3C3C3C3C
        call fill
        mov edi, dbuf2
        mov ebx, 404
        call fill
        mov esi, ctab
        mov ebx, 400
        mov ecx, 8
        mov al, 0x35
        call ahci_fis
        call ahci_prd2
        mov ecx, 2
        mov edx, 1 << 6
        call ahci_header
        xor ecx, ecx
        call ahci_issue
        test eax, eax
        EXPECT z, "AHCI: WRITE DMA EXT completes"
        cmp dword [cmdlist + 4], 4096
        EXPECT e, "AHCI: WRITE DMA EXT PRDBC = 4096"
        mov esi, ctab
        xor ebx, ebx
        xor ecx, ecx
        mov al, 0xEA
        call ahci_fis
        xor ecx, ecx
        xor edx, edx
        call ahci_header
        xor ecx, ecx
        call ahci_issue
        test eax, eax
        EXPECT z, "AHCI: FLUSH CACHE EXT completes"

        ; READ FPDMA QUEUED (NCQ) in slot 3, tag 3: the sectors just written.
        mov edi, dbuf
        mov ecx, 2048
        call clear
        mov edi, dbuf2
        call clear
        mov esi, ctab
        mov ebx, 400
        mov ecx, 3 << 3             ; count field: the tag
        mov al, 0x60
        call ahci_fis
        mov byte [ctab + 3], 8      ; features: sector count
        call ahci_prd2
        mov ecx, 2
        xor edx, edx
        call ahci_header
        mov esi, cmdlist
        mov edi, cmdlist + 3 * 32
        mov ecx, 8
        rep movsd                   ; the same header in slot 3
        mov dword [cmdlist + 3 * 32 + 4], 0
        mov edx, [port]
        mov dword [edx + 0x34], 1 << 3 ; SActive first, then CI
        mov ecx, 3
        call ahci_issue
        test eax, eax
        EXPECT z, "AHCI: READ FPDMA QUEUED completes"
        mov ecx, TIMEOUT
.sact:  test dword [edx + 0x34], 1 << 3
        jz .sact_done
        dec ecx
        jnz .sact
.sact_done:
        test dword [edx + 0x34], 1 << 3
        EXPECT z, "AHCI: NCQ tag 3 cleared from SActive"
        mov esi, dbuf
        mov ebx, 400
        mov ecx, 4
        mov edx, 0x3C3C3C3C
        call check
        mov ebp, eax
        mov esi, dbuf2
        mov ebx, 404
        call check
        or eax, ebp
        EXPECT z, "AHCI: NCQ read returns what WRITE DMA EXT wrote"

        ; A read past the end: TFD.ERR with ABRT, PxIS.TFES.
        mov edx, [port]
        mov dword [edx + 0x10], 0xFFFFFFFF
        mov esi, ctab
        mov ebx, SATA_SECTORS + 100
        mov ecx, 1
        mov al, 0x25
        call ahci_fis
        call ahci_prd2
        mov ecx, 2
        xor edx, edx
        call ahci_header
        xor ecx, ecx
        call ahci_issue
        test eax, eax
        EXPECT nz, "AHCI: read past the end does not succeed"
        mov edx, [port]
        mov eax, [edx + 0x20]
        and eax, 0x0401
        cmp eax, 0x0401
        EXPECT e, "AHCI: read past the end: TFD has ERR and ABRT"
        test dword [edx + 0x10], 1 << 30
        EXPECT nz, "AHCI: read past the end: PxIS.TFES"
        ret

; ---------------------------------------------------------------- data

        align 8
gdt:    dq 0
        dq 0x00cf9b000000ffff
        dq 0x00cf93000000ffff
gdt_desc:
        dw gdt_desc - gdt - 1
        dd gdt

        align 4
failures:    dd 0

        align 16
load_end:

; ---------------------------------------------------------------- bss (cleared by the loader)
        absolute load_end
bm_base:     resd 1
bm_cmd:      resb 1
bm_dir:      resb 1
bm_status:   resb 1
bm_devstatus: resb 1
ahci_cfg:    resd 1
port:        resd 1
        alignb 4096
cmdlist:     resb 1024
rfis:        resb 256
        alignb 128
ctab:        resb 0x100
        alignb 16
prd:         resb 16
        alignb 4096
ident:       resb 512
        alignb 4096
pbuf:        resb 4096
dbuf:        resb 0x3000
dbuf2:       resb 4096
        alignb 16
stack:       resb 16384
stack_top:
bss_end:
