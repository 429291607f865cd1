"""Reading a folder of image files: the safe walk that finds them, the decode cache, and decoding into it.
The dataset source over them is replearn/data/sources/folder.py."""
