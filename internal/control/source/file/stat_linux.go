//go:build linux

package file

import (
	"os"
	"syscall"
	"time"
)

// fileStat is what identifies a version of a file without reading it:
// device, inode, size, and modification and change times (ctime cannot be
// set by writers, so tools that restore mtime do not hide an edit).
type fileStat struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

// statFile stats path (following symlinks, as reading does); ok is false
// when that fails.
func statFile(path string) (fileStat, bool) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{}, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, false
	}
	return fileStat{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, true
}

// racyWindow: file times are coarse (a kernel tick, or seconds on some file
// systems), so a file written again within the tick it was last changed in
// may keep its stat. A stat is only trusted when the file's last change is
// this much older than the read, which then surely saw that change (git's
// "racy clean" rule); a recent file is simply read again next time.
var racyWindow = 2 * time.Second // a variable for tests

func trustedStat(s fileStat, readAt time.Time) bool {
	return s.ctime < readAt.Add(-racyWindow).UnixNano() && s.mtime < readAt.Add(-racyWindow).UnixNano()
}
