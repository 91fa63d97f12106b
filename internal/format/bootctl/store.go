package bootctl

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// NumCopies is the number of copies of the record on the device; copy i
// starts at byte i*RecordSize.
const NumCopies = 2

// WriterAtSyncer is the bay0-state device as Store needs it (an *os.File).
type WriterAtSyncer interface {
	io.WriterAt
	Sync() error
}

// Device is the record store: the bay0-state partition, opened read-write.
type Device interface {
	io.ReaderAt
	WriterAtSyncer
}

// Load reads both copies and returns the valid one with the larger Seq and
// its index. On equal Seq, copy 0 wins. It fails with ErrNoRecord, and the
// reason for each copy, when neither copy is valid.
func Load(dev io.ReaderAt) (rec Record, copyIndex int, err error) {
	var recs [NumCopies]Record
	var errs [NumCopies]error
	for i := range NumCopies {
		recs[i], errs[i] = loadCopy(dev, i)
	}
	switch {
	case errs[0] == nil && errs[1] == nil:
		if recs[1].Seq > recs[0].Seq {
			return recs[1], 1, nil
		}
		return recs[0], 0, nil
	case errs[0] == nil:
		return recs[0], 0, nil
	case errs[1] == nil:
		return recs[1], 1, nil
	}
	return Record{}, 0, fmt.Errorf("load boot record: %w: %w", ErrNoRecord, errors.Join(
		fmt.Errorf("copy 0: %w", errs[0]), fmt.Errorf("copy 1: %w", errs[1])))
}

func loadCopy(dev io.ReaderAt, i int) (Record, error) {
	b := make([]byte, RecordSize)
	n, err := dev.ReadAt(b, int64(i)*RecordSize)
	if n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Record{}, fmt.Errorf("read %d bytes at %d: %w", RecordSize, int64(i)*RecordSize, err)
	}
	return ParseRecord(b)
}

// Store writes next, with Seq set to prev.Seq+1, over the copy that is not
// prevCopy, then syncs the device, and returns the record written (next with
// its Seq) and the index of the copy written: the pair to pass as prev and
// prevCopy to the next Store. prev and prevCopy are what Load returned (or
// what the last Store returned). The copy holding prev is never touched, so a
// power cut at any point leaves either prev or next on the device as the
// newest valid record.
func Store(dev WriterAtSyncer, prev Record, prevCopy int, next Record) (Record, int, error) {
	if prevCopy != 0 && prevCopy != 1 {
		return prev, 0, fmt.Errorf("store boot record: %w: previous copy %d", ErrInvalid, prevCopy)
	}
	if prev.Seq == math.MaxUint64 {
		return prev, 0, fmt.Errorf("store boot record: %w: sequence number exhausted", ErrInvalid)
	}
	next.Seq = prev.Seq + 1
	b, err := next.MarshalBinary()
	if err != nil {
		return prev, 0, fmt.Errorf("store boot record: %w", err)
	}
	target := 1 - prevCopy
	if _, err := dev.WriteAt(b, int64(target)*RecordSize); err != nil {
		return prev, 0, fmt.Errorf("store boot record: write copy %d: %w", target, err)
	}
	if err := dev.Sync(); err != nil {
		return prev, 0, fmt.Errorf("store boot record: sync copy %d: %w", target, err)
	}
	return next, target, nil
}
