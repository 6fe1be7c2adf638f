################################################################################
#
# relaybox
#
################################################################################

# The daemon is built by cargo outside Buildroot (cross/build); this package
# installs that static binary. SITE is the directory holding it (Buildroot
# refuses a SITE with a trailing slash, so the one $(dir) leaves is cut).
RELAYBOX_VERSION = local
RELAYBOX_BINARY = $(call qstrip,$(BR2_PACKAGE_RELAYBOX_BINARY))
RELAYBOX_BINARY_NAME = $(notdir $(RELAYBOX_BINARY))
RELAYBOX_SITE = $(patsubst %/,%,$(dir $(RELAYBOX_BINARY)))
RELAYBOX_SITE_METHOD = local
RELAYBOX_LICENSE = MIT or Apache-2.0

# Do not rsync the whole cargo target directory into the build tree.
RELAYBOX_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--include=$(RELAYBOX_BINARY_NAME) --exclude=*

define RELAYBOX_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/$(RELAYBOX_BINARY_NAME) \
		$(TARGET_DIR)/usr/bin/relaybox
endef

$(eval $(generic-package))
