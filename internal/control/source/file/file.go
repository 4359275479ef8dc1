// Package file is the config source for file mode: every *.yaml/*.yml under a
// directory, decoded strictly by the shared resources decoder, watched with
// fsnotify and turned into resources.Resources snapshots.
//
// A file is applied as a whole. When a file stops parsing, the objects of its
// last good version stay in force and the file's errors are reported in the
// snapshot, so a typo in one file never takes down what it configured; a
// deleted file's objects do go away.
package file

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/ambitmesh/ambit/internal/control/resources"
)

// DefaultDebounce is how long the directory must be quiet before a change is
// applied: long enough to take an editor's save or a `cp -r` as one change,
// short enough that proxies see it at once.
const DefaultDebounce = 100 * time.Millisecond

// rootRetry is how often a vanished config directory is looked for.
var rootRetry = time.Second

// Options configure a Source.
type Options struct {
	// Debounce is how long no file event may arrive before changes are
	// applied. A steady stream of events is applied at least every
	// 10 × Debounce. Zero means DefaultDebounce.
	Debounce time.Duration
	// Logger receives watch problems; nil discards them. Configuration
	// errors are not logged here: they are in each snapshot's Errors.
	Logger *slog.Logger
}

// Source reads a directory (or a single file) of Kubernetes YAML.
type Source struct {
	dir  string
	opts Options
	log  *slog.Logger
}

// New returns a Source for dir. It does no I/O.
func New(dir string, opts Options) *Source {
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{dir: dir, opts: opts, log: log}
}

// Load reads and decodes everything once, for one-shot use such as
// `ambit translate`. Problems with individual files are in the result's
// Errors; the error is for a directory that cannot be read at all.
func (s *Source) Load() (*resources.Resources, error) {
	st := newState(s.dir)
	if _, err := st.rescan(); err != nil {
		return nil, err
	}
	return st.snapshot(), nil
}

// Run emits the initial snapshot, then a new one after each debounced change
// that alters what the files say, until ctx is done. emit is called from
// Run's goroutine, one call at a time; snapshots must not be modified. Run
// returns nil when ctx is cancelled, and an error when the directory cannot
// be read at the start or the watcher fails.
func (s *Source) Run(ctx context.Context, emit func(*resources.Resources)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("file source: start watching %s: %w", s.dir, err)
	}
	defer w.Close()

	st := newState(s.dir)
	st.watcher = w
	newDirs, err := st.rescan()
	if err != nil {
		return err
	}
	emit(st.snapshot())

	maxDelay := 10 * s.opts.Debounce
	timer := time.NewTimer(0)
	<-timer.C
	var (
		pending    bool
		firstEvent time.Time
	)
	// arm schedules a rescan once the directory has been quiet for the
	// debounce, but never later than maxDelay after the first event.
	arm := func() {
		now := time.Now()
		if !pending {
			pending, firstEvent = true, now
		}
		delay := min(s.opts.Debounce, firstEvent.Add(maxDelay).Sub(now))
		timer.Reset(max(delay, 0))
	}
	if newDirs {
		// Files created between the walk and adding the watches on their
		// directories raised no event; look once more.
		arm()
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return fmt.Errorf("file source: watcher for %s closed unexpectedly", s.dir)
			}
			// Any event may matter: a hidden directory swap is how Kubernetes
			// updates a mounted ConfigMap, a removed directory takes its files
			// along. A rescan that finds nothing new emits nothing.
			arm()
		case err, ok := <-w.Errors:
			if !ok {
				return fmt.Errorf("file source: watcher for %s closed unexpectedly", s.dir)
			}
			// Typically an event queue overflow: events were lost, so rescan.
			s.log.Warn("file watch error; rescanning", "dir", s.dir, "err", err)
			arm()
		case <-timer.C:
			pending = false
			changed, newDirs, err := st.rescanWatched()
			switch {
			case err != nil:
				// The directory itself is gone, and its watch with it: poll
				// until it is back.
				if changed {
					s.log.Error("cannot read config directory; keeping the last configuration", "dir", s.dir, "err", err)
				}
				timer.Reset(rootRetry)
			case newDirs:
				arm()
			}
			if changed {
				emit(st.snapshot())
			}
		}
	}
}

// fileState is what the source knows about one file.
type fileState struct {
	hash [sha256.Size]byte
	read bool // hash is valid
	// good are the objects of the last version that decoded without errors,
	// with generations assigned; nil if there never was one.
	good     []resources.Decoded
	specs    [][sha256.Size]byte // spec hash of each good object
	everGood bool
	// errs are the problems of the current version; empty when good is current.
	errs []resources.SourceError
}

type objKey struct {
	gk       schema.GroupKind
	ns, name string
}

type generation struct {
	gen  int64
	spec [sha256.Size]byte
}

type state struct {
	root    string
	watcher *fsnotify.Watcher // nil for Load
	watched map[string]bool
	files   map[string]*fileState
	walkErr []resources.SourceError
	gens    map[objKey]generation
	// lastChanged says whether the last rescan changed anything a snapshot shows.
	lastChanged bool
}

func newState(root string) *state {
	return &state{
		root:    root,
		watched: map[string]bool{},
		files:   map[string]*fileState{},
		gens:    map[objKey]generation{},
	}
}

// rescanWatched is rescan for the running source: a directory that vanished
// keeps the last configuration instead of dropping every object, and says so.
func (st *state) rescanWatched() (changed, newDirs bool, err error) {
	newDirs, err = st.rescan()
	if err != nil {
		e := []resources.SourceError{{Source: st.root, Message: err.Error() + "; the last configuration read from it stays in force"}}
		changed = !equalErrors(e, st.walkErr)
		st.walkErr = e
		// The kernel dropped the watches with the directory; forget them so
		// that they are added again when it comes back.
		for d := range st.watched {
			_ = st.watcher.Remove(d)
		}
		clear(st.watched)
		return changed, false, err
	}
	return st.lastChanged, newDirs, nil
}

// rescan walks the tree and rereads every file, recording what changed in
// st.lastChanged. It reports whether new directories were put under watch.
func (st *state) rescan() (newDirs bool, err error) {
	st.lastChanged = false
	info, err := os.Stat(st.root)
	if err != nil {
		return false, fmt.Errorf("file source: config directory %s: %w; create it or point the config directory elsewhere", st.root, err)
	}

	var (
		paths   []string
		dirs    []string
		walkErr []resources.SourceError
		// Files under a directory that could not be read keep their state:
		// unreadable is not the same as deleted.
		unreadable []string
	)
	if !info.IsDir() {
		paths = []string{st.root}
		dirs = []string{filepath.Dir(st.root)}
	} else {
		walkRoot := st.root
		if li, err := os.Lstat(st.root); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			// WalkDir does not descend into a symlinked root; a trailing
			// separator makes it resolve the link.
			walkRoot += string(filepath.Separator)
		}
		err := filepath.WalkDir(walkRoot, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if path == walkRoot {
					return err
				}
				walkErr = append(walkErr, resources.SourceError{Source: path, Message: fmt.Sprintf("cannot read: %v; fix its permissions (files in it keep their last configuration)", unwrapPath(err))})
				unreadable = append(unreadable, path)
				if d != nil && d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if path != walkRoot && skipName(d.Name()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			switch {
			case d.IsDir():
				dirs = append(dirs, path)
			case d.Type().IsRegular():
				if isYAML(d.Name()) {
					paths = append(paths, path)
				}
			case d.Type()&fs.ModeSymlink != 0:
				// Kubernetes mounts ConfigMap keys as symlinks; follow links to
				// files but not to directories, which could form cycles.
				if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && isYAML(d.Name()) {
					paths = append(paths, path)
				}
			}
			return nil
		})
		if err != nil {
			return false, fmt.Errorf("file source: config directory %s: %w", st.root, err)
		}
	}
	if !equalErrors(walkErr, st.walkErr) {
		st.lastChanged = true
	}
	st.walkErr = walkErr

	newDirs = st.syncWatches(dirs)

	present := make(map[string]bool, len(paths))
	for _, p := range paths {
		present[p] = true
		if st.update(p) {
			st.lastChanged = true
		}
	}
	for p := range st.files {
		if present[p] || under(p, unreadable) {
			continue
		}
		delete(st.files, p)
		st.lastChanged = true
	}
	return newDirs, nil
}

// update rereads one file and reports whether anything about it changed.
func (st *state) update(path string) bool {
	fst := st.files[path]
	if fst == nil {
		fst = &fileState{}
		st.files[path] = fst
	}
	data, err := os.ReadFile(path)
	if err != nil {
		msg := fmt.Sprintf("cannot read file: %v; fix the file or its permissions", unwrapPath(err))
		if fst.everGood {
			msg += " (its last good version stays in force)"
		}
		e := []resources.SourceError{{Source: path, Message: msg}}
		changed := !equalErrors(e, fst.errs)
		fst.errs, fst.read = e, false
		return changed
	}
	h := sha256.Sum256(data)
	if fst.read && h == fst.hash {
		return false
	}
	fst.hash, fst.read = h, true

	objs, errs := resources.Decode(path, data)
	if len(errs) == 0 {
		fst.good, fst.everGood, fst.errs = objs, true, nil
		fst.specs = make([][sha256.Size]byte, len(objs))
		for i, o := range objs {
			fst.specs[i] = specHash(o.Object)
		}
		return true
	}
	note := "file not applied until its errors are fixed"
	if fst.everGood {
		note += fmt.Sprintf("; its last good version (%d objects) stays in force meanwhile", len(fst.good))
	}
	errs = append(errs, resources.SourceError{Source: path, Message: note})
	changed := !equalErrors(errs, fst.errs)
	fst.errs = errs
	return changed
}

// snapshot builds Resources from every file's good objects, in path order so
// that "first one wins" on duplicates is stable, and assigns generations.
func (st *state) snapshot() *resources.Resources {
	paths := make([]string, 0, len(st.files))
	for p := range st.files {
		paths = append(paths, p)
	}
	slices.Sort(paths)

	var (
		objs []resources.Decoded
		errs = append([]resources.SourceError(nil), st.walkErr...)
		seen = map[objKey]bool{}
	)
	for _, p := range paths {
		fst := st.files[p]
		errs = append(errs, fst.errs...)
		for i := range fst.good {
			o := fst.good[i]
			k := objKey{o.GetObjectKind().GroupVersionKind().GroupKind(), o.GetNamespace(), o.GetName()}
			if !seen[k] {
				// Only the object that will win a duplicate owns the generation.
				seen[k] = true
				fst.good[i].Object = st.assignGeneration(k, o.Object, fst.specs[i])
			}
			objs = append(objs, fst.good[i])
		}
	}
	for k := range st.gens {
		if !seen[k] {
			// Gone: a later object of that name starts again at 1, as after
			// a delete and create in the API server.
			delete(st.gens, k)
		}
	}
	r := resources.Build(objs)
	r.Errors = append(r.Errors, errs...)
	r.Sort()
	return r
}

// assignGeneration returns o with the generation it should have: 1 when first
// seen, one more whenever its spec changes. Objects already handed out in a
// snapshot are never modified; a copy carries the new generation.
func (st *state) assignGeneration(k objKey, o resources.Object, spec [sha256.Size]byte) resources.Object {
	g, ok := st.gens[k]
	switch {
	case !ok:
		g = generation{gen: 1, spec: spec}
	case g.spec != spec:
		g = generation{gen: g.gen + 1, spec: spec}
	}
	st.gens[k] = g
	if o.GetGeneration() == g.gen {
		return o
	}
	c := o.DeepCopyObject().(resources.Object)
	c.SetGeneration(g.gen)
	return c
}

// specHash hashes everything but metadata and status: what the API server
// bumps metadata.generation for.
func specHash(o resources.Object) [sha256.Size]byte {
	b, err := json.Marshal(o)
	if err != nil {
		return sha256.Sum256([]byte(err.Error()))
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return sha256.Sum256(b)
	}
	for _, f := range []string{"metadata", "status", "apiVersion", "kind"} {
		delete(m, f)
	}
	b, _ = json.Marshal(m) // map keys are sorted, so equal specs hash equally
	return sha256.Sum256(b)
}

// syncWatches watches every directory of the tree and reports whether any
// was added.
func (st *state) syncWatches(dirs []string) bool {
	if st.watcher == nil {
		return false
	}
	added := false
	want := make(map[string]bool, len(dirs))
	for _, d := range dirs {
		want[d] = true
		if st.watched[d] {
			continue
		}
		if err := st.watcher.Add(d); err != nil {
			// Usually the directory vanished again; the next event rescans.
			continue
		}
		st.watched[d], added = true, true
	}
	for d := range st.watched {
		if !want[d] {
			_ = st.watcher.Remove(d) // fails when the kernel already dropped it with the directory
			delete(st.watched, d)
		}
	}
	return added
}

// skipName reports hidden files and directories and editor leftovers.
func skipName(name string) bool {
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "#") || strings.HasSuffix(name, "~")
}

func isYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// unwrapPath drops the path from *fs.PathError: messages already name it.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func equalErrors(a, b []resources.SourceError) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
