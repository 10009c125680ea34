/*
 * The CONFIG_* switches that decide which cases of qmp_decode_features() and which rows of
 * virtio_mem_feature_map[] are compiled, for Debian's qemu-system-x86_64 7.2 build (the build
 * the captures come from). QEMU generates this as x86_64-softmmu/config-devices.h from Kconfig;
 * listed here are only the symbols virtio.c tests. CONFIG_VIRTIO_I2C_ADAPTER is not a Kconfig
 * symbol in 7.2 (only VHOST_USER_I2C exists), so it is never defined. CONFIG_ACPI is selected by
 * PC (PC -> PC_ACPI -> ACPI_X86 -> ACPI). VIRTIO_CONFIG_NO_LEGACY, VIRTIO_BLK_NO_LEGACY and
 * VIRTIO_NET_NO_LEGACY are never defined in QEMU.
 */
#define CONFIG_ACPI 1
#define CONFIG_VIRTIO_SERIAL 1
#define CONFIG_VIRTIO_BLK 1
#define CONFIG_VIRTIO_GPU 1
#define CONFIG_VIRTIO_NET 1
#define CONFIG_VIRTIO_SCSI 1
#define CONFIG_VIRTIO_BALLOON 1
#define CONFIG_VIRTIO_IOMMU 1
#define CONFIG_VIRTIO_INPUT 1
#define CONFIG_VHOST_USER_FS 1
#define CONFIG_VHOST_VSOCK 1
#define CONFIG_VIRTIO_CRYPTO 1
#define CONFIG_VIRTIO_MEM 1
#define CONFIG_VIRTIO_RNG 1
