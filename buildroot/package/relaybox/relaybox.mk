################################################################################
#
# relaybox
#
################################################################################

# The daemon is built by cargo outside Buildroot (cross/build); this package
# installs that static binary. SITE points at the directory holding it.
RELAYBOX_VERSION = local
RELAYBOX_BINARY = $(call qstrip,$(BR2_PACKAGE_RELAYBOX_BINARY))
RELAYBOX_SITE = $(dir $(RELAYBOX_BINARY))
RELAYBOX_SITE_METHOD = local
RELAYBOX_LICENSE = MIT or Apache-2.0
RELAYBOX_INSTALL_TARGET = YES

# Do not rsync the whole cargo target directory into the build tree.
RELAYBOX_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --include=relaybox --exclude=*

define RELAYBOX_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/relaybox $(TARGET_DIR)/usr/bin/relaybox
endef

$(eval $(generic-package))
