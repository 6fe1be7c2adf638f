################################################################################
#
# Relaybox BR2_EXTERNAL: include every package of this tree
#
################################################################################

include $(sort $(wildcard $(BR2_EXTERNAL_RELAYBOX_PATH)/package/*/*.mk))
