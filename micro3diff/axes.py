"""The one rule for volume axes and plane names, used by the sampler, training, metrics, anchors and the CLI.

A volume is a (D, H, W) array. Axis letters: x = D (array axis 0), y = H (1), z = W (2). A plane is named by
the two axes it spans: "yz" = slices at fixed x (D), "xz" = at fixed y (H), "xy" = at fixed z (W); PLANES[k]
is the plane whose slices lie across array axis k, and the sampler visits them in this order. Viewers name
the axes of the same array differently: Fiji's slice index and ParaView's z are D, ParaView's x is W.
"""
PLANES = ("yz", "xz", "xy")  # slices at fixed D, H, W
AXES = ("x", "y", "z")  # array axes D, H, W
