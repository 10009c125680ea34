#!/usr/bin/env python3
"""Build a DWARF probe object for ``vdecode profile`` from a QEMU source tree (docs/formats-qemu-core.md).

Debian ships no reachable ``qemu-system-x86-dbgsym`` here, so the struct layouts come from a small object
compiled with the same compiler and ABI as Debian's build, against the same release's headers:

1. ``scripts/qapi-gen.py -b -o WORK/qapi qapi/qapi-schema.json`` (the tree's own generator) writes the
   QAPI headers that ``hw/qdev-core.h`` and friends include.
2. ``WORK/config-host.h`` and ``WORK/config-target.h`` (written here: ``CONFIG_LINUX``, ``CONFIG_POSIX``,
   ``CONFIG_INT128``, ``TARGET_X86_64`` …, only what the included headers test) and empty
   ``trace``/``config-poison`` stand-ins.
3. ``WORK/virtio-private.h``: the definitions of ``VRingMemoryRegionCaches``, ``VRing`` and ``VirtQueue``,
   private to ``hw/virtio/virtio.c``, cut from the tree at build time (they stay in WORK, never here).
   With ``--glib-src`` (``apt-get source glib2.0``), glib's private ``struct _GHashTable`` is cut from
   ``glib/ghash.c`` the same way and renamed ``struct GHashTable`` so the profile names the public type.
4. ``WORK/probe.c``: includes the headers and declares one pointer to each struct, so gcc emits each
   complete type once.
5. ``gcc -g -O0 -gz=zlib -c probe.c`` and ``objcopy --only-keep-debug`` -> ``-o PROBE.o``.

Then::

    .venv/bin/vdecode profile PROBE.o -o formats/qemu-X.Y/layout-x86_64.json \\
        --like TEMPLATE --binary /usr/bin/qemu-system-x86_64

Usage: ``python tools/layout_probe/build_probe.py --qemu-src TREE [--glib-src GLIB] -o PROBE.o``
(``--structs 7.2`` builds the 7.2 profile's eight structs, the default builds those plus the QOM-walk
ones: ``ObjectProperty`` and ``GHashTable``). It prints the bit positions of ``GHashTable``'s bitfields,
which a profile keeps outside ``structs`` (``vdecode profile`` reads byte offsets only).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qemu_source import SourceError, Tree, struct_definition  # noqa: E402

# The headers that define the structs of a layout profile (QEMU 7.2 and 10.0 paths; the first that exists).
HEADERS = (
    ("qemu/osdep.h",),
    ("qom/object.h",),
    ("hw/qdev-core.h",),
    ("exec/memory.h", "system/memory.h"),
    ("exec/ramblock.h", "system/ramblock.h"),
    ("hw/virtio/virtio.h",),
    ("hw/virtio/vhost.h",),
)
PRIVATE = ("VRingMemoryRegionCaches", "VRing", "VirtQueue")     # from hw/virtio/virtio.c
STRUCTS_72 = ("Object", "DeviceState", "VirtIODevice", "VirtQueue", "struct vhost_dev",
              "struct vhost_virtqueue", "RAMBlock", "MemoryRegion")
STRUCTS_QOM = ("ObjectProperty", "struct GHashTable")

CONFIG_HOST = """\
/* written by tools/layout_probe/build_probe.py: the host facts the included headers test */
#define CONFIG_LINUX 1
#define CONFIG_POSIX 1
#define CONFIG_INT128 1
#define CONFIG_IOVEC 1
#define CONFIG_PREADV 1
#define CONFIG_ATOMIC64 1
#define CONFIG_CPUID_H 1
#define CONFIG_EVENTFD 1
#define CONFIG_VHOST 1
#define CONFIG_VHOST_KERNEL 1
#define CONFIG_VHOST_USER 1
#define CONFIG_VHOST_NET 1
#define CONFIG_VHOST_NET_USER 1
#define CONFIG_VHOST_VDPA 1
#define CONFIG_SOFTMMU 1
#define CONFIG_SYSTEM_ONLY 1
#define CONFIG_TCG 1
#define CONFIG_KVM 1
#define HOST_X86_64 1
#define QEMU_VERSION "{version}"
#define QEMU_VERSION_MAJOR {major}
#define QEMU_VERSION_MINOR {minor}
#define QEMU_VERSION_MICRO {micro}
#define QEMU_PKGVERSION ""
#define CONFIG_BDRV_RW_WHITELIST NULL
#define CONFIG_BDRV_RO_WHITELIST NULL
#define CONFIG_QEMU_CONFDIR "/etc/qemu"
#define CONFIG_QEMU_DATADIR "/usr/share/qemu"
#define CONFIG_HOST_DSOSUF ".so"
#define SIZEOF_VOID_P 8
#define CONFIG_GETAUXVAL 1
"""
CONFIG_TARGET = """\
/* written by tools/layout_probe/build_probe.py */
#define TARGET_X86_64 1
#define TARGET_NAME "x86_64"
#define TARGET_I386 1
#define TARGET_LONG_BITS 64
#define TARGET_SUPPORTS_MTTCG 1
#define CONFIG_I386_DIS 1
#define CONFIG_SOFTMMU 1
#define CONFIG_KVM 1
"""


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(map(str, cmd)), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


def first_header(tree: Tree, names: tuple[str, ...]) -> str:
    for name in names:
        if (tree.root / "include" / name).is_file():
            return name
    raise SourceError(f"{tree.root}/include: none of {', '.join(names)}")


def write_work(tree: Tree, work: Path, glib_src: Path | None, structs: tuple[str, ...]) -> Path:
    """Steps 1-4: the QAPI headers, the config headers, the cut private structs and probe.c."""
    run([sys.executable, str(tree.root / "scripts/qapi-gen.py"), "-b", "-o", str(work / "qapi"),
         str(tree.root / "qapi/qapi-schema.json")], work)
    major, minor, micro = (tree.version.split(".") + ["0", "0"])[:3]
    (work / "config-host.h").write_text(CONFIG_HOST.format(version=tree.version, major=major,
                                                           minor=minor, micro=micro))
    (work / "config-target.h").write_text(CONFIG_TARGET)
    (work / "config-poison.h").write_text("/* empty: the probe is not a target object */\n")
    virtio_c = tree.text("hw/virtio/virtio.c")
    cuts = [f"/* cut from {tree.root}/hw/virtio/virtio.c at build time */"]
    cuts += [struct_definition(virtio_c, name) for name in PRIVATE]
    (work / "virtio-private.h").write_text("\n\n".join(cuts) + "\n")
    includes = [f'#include "{first_header(tree, h)}"' for h in HEADERS] + ['#include "virtio-private.h"']
    decls = []
    for i, s in enumerate(structs):
        if s == "struct GHashTable":
            if glib_src is None:
                raise SourceError("GHashTable needs --glib-src (apt-get source glib2.0)")
            text = (glib_src / "glib" / "ghash.c").read_text()
            cut = struct_definition(text, "_GHashTable").replace("struct _GHashTable", "struct GHashTable", 1)
            (work / "ghash-private.h").write_text(f"/* cut from {glib_src}/glib/ghash.c at build time */\n"
                                                  f"{cut}\n")
            includes.append('#include "ghash-private.h"')
        decls.append(f"{s} *probe_{i};")
    (work / "probe.c").write_text(
        "/* written by tools/layout_probe/build_probe.py: one pointer per struct of the layout profile */\n"
        + "\n".join(includes) + "\n\n" + "\n".join(decls) + "\n")
    return work / "probe.c"


def compile_probe(tree: Tree, work: Path, out: Path) -> None:
    """Step 5: gcc with Debian's x86_64 ABI (-O0 keeps every type), then keep only the debug sections."""
    glib = subprocess.run(["pkg-config", "--cflags", "glib-2.0"], check=True, capture_output=True,
                          text=True).stdout.split()
    obj = work / "probe.full.o"
    run(["gcc", "-g", "-O0", "-gz=zlib", "-std=gnu11", "-c", "probe.c", "-o", str(obj),
         "-I", str(work), "-I", str(work / "qapi"), "-I", str(tree.root / "include"), "-I", str(tree.root),
         "-I", str(tree.root / "linux-headers"), "-I", str(tree.root / "host/include/x86_64"),
         "-I", str(tree.root / "host/include/generic"), "-I", str(tree.root / "tcg/i386"),
         "-DNEED_CPU_H", "-DCOMPILING_PER_TARGET", "-D_GNU_SOURCE", "-D_FILE_OFFSET_BITS=64",
         "-DCONFIG_TARGET=\"config-target.h\"", "-DCONFIG_DEVICES=\"config-poison.h\"",
         *glib], work)
    run(["objcopy", "--only-keep-debug", str(obj), str(out)], work)


def bitfields(probe: Path, struct: str) -> list[dict]:
    """``[{name, byte, bit, bits}]`` of a struct's bitfields (DW_AT_data_bit_offset or DWARF 2 style)."""
    from elftools.elf.elffile import ELFFile
    with open(probe, "rb") as f:
        for cu in ELFFile(f).get_dwarf_info().iter_CUs():
            for die in cu.iter_DIEs():
                name = die.attributes.get("DW_AT_name")
                if die.tag != "DW_TAG_structure_type" or not name or name.value.decode() != struct:
                    continue
                out = []
                for m in die.iter_children():
                    a = m.attributes
                    if "DW_AT_bit_size" in a and "DW_AT_data_bit_offset" in a:
                        off = a["DW_AT_data_bit_offset"].value
                        out.append({"name": a["DW_AT_name"].value.decode(), "byte": off // 8,
                                    "bit": off % 8, "bits": a["DW_AT_bit_size"].value})
                return out
    return []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qemu-src", required=True, type=Path, help="QEMU source tree (debian/patches applied)")
    ap.add_argument("--glib-src", type=Path, help="glib source tree, for GHashTable (apt-get source glib2.0)")
    ap.add_argument("-o", "--output", required=True, type=Path, help="the probe object to write")
    ap.add_argument("--structs", choices=("7.2", "qom"), default="qom",
                    help="7.2: the 7.2 profile's structs; qom (default): those and ObjectProperty, GHashTable")
    ap.add_argument("--work", type=Path, help="keep the build folder here (default: a temporary one)")
    args = ap.parse_args(argv)
    try:
        tree = Tree.open(args.qemu_src)
    except SourceError as err:
        print(f"build_probe: {err}", file=sys.stderr)
        return 2
    structs = STRUCTS_72 + (STRUCTS_QOM if args.structs == "qom" else ())
    work = args.work or Path(tempfile.mkdtemp(prefix="vdecode-probe-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        write_work(tree, work, args.glib_src, structs)
        compile_probe(tree, work, args.output.resolve())
    except (SourceError, subprocess.CalledProcessError) as err:
        print(f"build_probe: {err} (build folder: {work})", file=sys.stderr)
        return 1
    if "struct GHashTable" in structs:
        for bf in bitfields(args.output, "GHashTable"):
            print(f"GHashTable bitfield {bf['name']}: byte {bf['byte']} bit {bf['bit']} ({bf['bits']} bit)")
    print(f"{args.output}: {args.output.stat().st_size} bytes")
    if args.work is None:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
